#!/usr/bin/env bash
# The test command of the README: installs what the tests need from Debian's packages (ffmpeg for
# the live network-stream tests, Aravis and its fake GigE Vision camera for the GenICam tests,
# mosquitto for the MQTT bridge, chromium for the operator page), a venv with the pinned CPU stack
# incl. torch + transformers + bitsandbytes for the 4-bit VLM tests, checks style and the import
# layers, runs the whole suite.  Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use (each test starts its own server/camera/browser on loopback):
#   ffmpeg                      live MJPEG/RTSP-like streams for the camera tests
#   gir1.2-aravis-0.8 aravis-tools   Aravis + its fake GigE Vision camera (GenICam tests)
#   libgirepository1.0-dev libcairo2-dev pkg-config   to build PyGObject for the genicam extra
#   mosquitto                   the MQTT broker of the bridge tests (not the system service)
#   chromium                    the operator page test (Playwright drives /usr/bin/chromium)
DEBIAN_PKGS=(ffmpeg gir1.2-aravis-0.8 aravis-tools libgirepository1.0-dev libcairo2-dev
             pkg-config mosquitto chromium)
missing=()
for pkg in "${DEBIAN_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]} (Debian packages) for the tests"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  for try in 1 2 3 4 5 6; do  # another process may hold the dpkg lock for a minute
    if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null; then
      break
    fi
    [ "$try" = 6 ] && { echo "apt-get install ${missing[*]} failed" >&2; exit 1; }
    sleep 15
  done
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "== installing the package with its pinned test dependencies"
.venv/bin/python -m pip install -q -c constraints.txt -e '.[vlm,test,genicam,bridges]'

echo "== ruff"
.venv/bin/ruff check .
echo "== pytest"
# the package registries are reachable here: also test deploy/install.sh building its venv
export STATION_TEST_INSTALL_VENV=${STATION_TEST_INSTALL_VENV:-1}
# two workers (the CI machine has two cores); a test file stays on one worker (loadfile), so
# tests that share a fixed resource (the fake GigE Vision camera's port) never overlap
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
