#!/usr/bin/env bash
# The test command of the README: installs what the tests need (ffmpeg for the live-stream tests,
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

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "== installing the package with its pinned test dependencies"
.venv/bin/python -m pip install -q -c constraints.txt -e '.[vlm,test]'

echo "== ruff"
.venv/bin/ruff check .
echo "== pytest"
# the package registries are reachable here: also test deploy/install.sh building its venv
export STATION_TEST_INSTALL_VENV=${STATION_TEST_INSTALL_VENV:-1}
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
