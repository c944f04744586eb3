#!/usr/bin/env bash
# The test command of the README: installs what the tests need (ffmpeg for the live-stream tests,
# Aravis and its fake GigE Vision camera for the GenICam tests,
# a venv with the pinned CPU stack incl. torch + transformers + bitsandbytes for the 4-bit VLM
# tests), checks style, runs the whole suite.  Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ffmpeg >/dev/null 2>&1; then
  echo "== installing ffmpeg (Debian package) for the live network-stream tests"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi

# Aravis for the GenICam tests: its fake GigE Vision camera (aravis-tools), the introspection
# data PyGObject loads (gir1.2-aravis-0.8), and what the genicam extra needs to build PyGObject.
aravis_pkgs=(gir1.2-aravis-0.8 aravis-tools libgirepository1.0-dev libcairo2-dev pkg-config)
missing=()
for pkg in "${aravis_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]} (Debian packages) for the GenICam camera tests"
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

# Debian's mosquitto for the MQTT bridge tests (each test starts its own broker on loopback;
# the system service is not used).
if ! dpkg-query -W -f='${Status}' mosquitto 2>/dev/null | grep -q "install ok installed"; then
  echo "== installing mosquitto (Debian package) for the MQTT bridge tests"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  for try in 1 2 3 4 5 6; do  # another process may hold the dpkg lock for a minute
    if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        --no-install-recommends mosquitto >/dev/null; then
      break
    fi
    [ "$try" = 6 ] && { echo "apt-get install mosquitto failed" >&2; exit 1; }
    sleep 15
  done
fi

# Debian's chromium for the operator page test (tests/test_web.py drives it through Playwright
# with executable_path=/usr/bin/chromium: no browser download).
if ! dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed"; then
  echo "== installing chromium (Debian package) for the operator page test"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  for try in 1 2 3 4 5 6; do  # another process may hold the dpkg lock for a minute
    if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        --no-install-recommends chromium >/dev/null; then
      break
    fi
    [ "$try" = 6 ] && { echo "apt-get install chromium failed" >&2; exit 1; }
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
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
