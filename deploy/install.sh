#!/usr/bin/env bash
# Install or update the inspection station as a systemd service.  Idempotent: run it again after
# pulling a new version; it never overwrites the operator's station.yaml or recipes.
#
#   sudo deploy/install.sh [--extras gpu] [--wheelhouse DIR] [--start]
#
# What it does:
#   1. system user/group "inspection" (no login, no home), added to video and render
#   2. folders: /etc/inspection-station{,/recipes}   root:inspection 0750
#               /var/lib/inspection-station{,/recordings}, /var/cache/inspection-station
#                                                    inspection:inspection 0750
#   3. venv /opt/inspection-station/venv with this source tree installed into it
#   4. /etc/inspection-station/station.yaml from deploy/station.example.yaml (only if missing;
#      the current example is always written as station.example.yaml beside it)
#   5. /etc/systemd/system/inspection-station.service, daemon-reload, enable (--start: restart)
#
# --root DIR stages everything under DIR instead of / (packaging, tests): no user is created,
# nothing is chowned, systemctl is not called.
set -euo pipefail
cleanup=()
trap 'rm -rf "${cleanup[@]}"' EXIT

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=""
PREFIX=/opt/inspection-station
SVC_USER=inspection
EXTRAS=""
WHEELHOUSE=""
PYTHON=${PYTHON:-python3}
DO_VENV=1
DO_SYSTEMD=1
START=0
CONF_DIR=/etc/inspection-station
STATE_DIR=/var/lib/inspection-station
CACHE_DIR=/var/cache/inspection-station
UNIT_NAME=inspection-station.service

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  cat <<EOF
Options:
  --prefix DIR       install prefix (default $PREFIX)
  --user NAME        service user (default $SVC_USER)
  --extras LIST      pip extras, e.g. gpu or vlm (default: none, CPU metric judge only)
  --wheelhouse DIR   install offline from wheels in DIR (pip --no-index --find-links)
  --python EXE       interpreter for the venv (default $PYTHON)
  --root DIR         stage under DIR (no user, no chown, no systemctl)
  --no-venv          skip the venv (folders, config and unit only)
  --no-systemd       do not call systemctl
  --start            (re)start the service at the end
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=$2; shift 2 ;;
    --user) SVC_USER=$2; shift 2 ;;
    --extras) EXTRAS=$2; shift 2 ;;
    --wheelhouse) WHEELHOUSE=$2; shift 2 ;;
    --python) PYTHON=$2; shift 2 ;;
    --root) ROOT=${2%/}; shift 2 ;;
    --no-venv) DO_VENV=0; shift ;;
    --no-systemd) DO_SYSTEMD=0; shift ;;
    --start) START=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

log() { echo "== $*"; }
r() { printf '%s%s' "$ROOT" "$1"; }  # a path under the staging root

if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (or stage with --root DIR)" >&2
  exit 1
fi
[ -f "$SRC/pyproject.toml" ] || { echo "install.sh: $SRC is not the source tree" >&2; exit 1; }

# 1. service user ---------------------------------------------------------------------------
if [ -z "$ROOT" ]; then
  if ! getent group "$SVC_USER" >/dev/null; then
    log "group $SVC_USER"
    groupadd --system "$SVC_USER"
  fi
  if ! id -u "$SVC_USER" >/dev/null 2>&1; then
    log "user $SVC_USER"
    nologin=$(command -v nologin || echo /usr/sbin/nologin)
    useradd --system --gid "$SVC_USER" --home-dir "$STATE_DIR" --no-create-home \
      --shell "$nologin" --comment "edge inspection station" "$SVC_USER"
  fi
  for g in video render; do
    if getent group "$g" >/dev/null && ! id -nG "$SVC_USER" | tr ' ' '\n' | grep -qx "$g"; then
      log "adding $SVC_USER to group $g"
      usermod -a -G "$g" "$SVC_USER"
    fi
  done
fi

# 2. folders ---------------------------------------------------------------------------------
dir() {  # dir MODE OWNER GROUP PATH: create or fix mode/owner (install -d is idempotent)
  if [ -z "$ROOT" ]; then
    install -d -m "$1" -o "$2" -g "$3" "$(r "$4")"
  else
    install -d -m "$1" "$(r "$4")"
  fi
}
log "folders"
install -d -m 0755 "$(r "$PREFIX")" "$(r /etc/systemd/system)"
dir 0750 root "$SVC_USER" "$CONF_DIR"
dir 0750 root "$SVC_USER" "$CONF_DIR/recipes"
dir 0750 "$SVC_USER" "$SVC_USER" "$STATE_DIR"
dir 0750 "$SVC_USER" "$SVC_USER" "$STATE_DIR/recordings"
dir 0750 "$SVC_USER" "$SVC_USER" "$CACHE_DIR"

# 3. venv --------------------------------------------------------------------------------------
if [ "$DO_VENV" = 1 ]; then
  VENV=$(r "$PREFIX/venv")
  if [ ! -x "$VENV/bin/python" ]; then
    log "venv $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  # Build from a clean copy of what the package consists of: pip would otherwise write build/
  # and *.egg-info into the source tree (which may be read-only, or someone's checkout).
  pkg_src=$(mktemp -d)
  cleanup+=("$pkg_src")
  for f in pyproject.toml README.md LICENSE setup.cfg station camera pipeline; do
    [ -e "$SRC/$f" ] && cp -r "$SRC/$f" "$pkg_src/"
  done
  find "$pkg_src" -name __pycache__ -prune -exec rm -rf {} +
  spec="$pkg_src"
  [ -n "$EXTRAS" ] && spec="$pkg_src[$EXTRAS]"
  pip_args=(--disable-pip-version-check --quiet)
  [ -n "$WHEELHOUSE" ] && pip_args+=(--no-index --find-links "$WHEELHOUSE")
  [ -f "$SRC/constraints.txt" ] && pip_args+=(-c "$SRC/constraints.txt")
  log "installing $spec into the venv"
  "$VENV/bin/python" -m pip install "${pip_args[@]}" --upgrade "$spec"
  "$VENV/bin/station" --version
fi

# 4. configuration ---------------------------------------------------------------------------
cfg=$(r "$CONF_DIR/station.yaml")
conf_install() {  # conf_install SRC DEST
  if [ -z "$ROOT" ]; then
    install -m 0640 -o root -g "$SVC_USER" "$1" "$2"
  else
    install -m 0640 "$1" "$2"
  fi
}
conf_install "$SRC/deploy/station.example.yaml" "$(r "$CONF_DIR/station.example.yaml")"
if [ ! -e "$cfg" ]; then
  log "config $cfg (from the example: edit camera, recipe and station id)"
  conf_install "$SRC/deploy/station.example.yaml" "$cfg"
else
  log "config $cfg kept (current example: station.example.yaml)"
fi

# 5. systemd unit ------------------------------------------------------------------------------
unit=$(r "/etc/systemd/system/$UNIT_NAME")
tmp_unit=$(mktemp)
cleanup+=("$tmp_unit")
sed -e "s|/opt/inspection-station/venv|$PREFIX/venv|g" \
    -e "s|^User=inspection$|User=$SVC_USER|" -e "s|^Group=inspection$|Group=$SVC_USER|" \
    "$SRC/deploy/$UNIT_NAME" >"$tmp_unit"
if ! cmp -s "$tmp_unit" "$unit"; then
  log "unit $unit"
  install -m 0644 "$tmp_unit" "$unit"
  changed=1
else
  changed=0
fi

if [ -z "$ROOT" ] && [ "$DO_SYSTEMD" = 1 ]; then
  if [ -d /run/systemd/system ]; then
    [ "$changed" = 1 ] && systemctl daemon-reload
    systemctl enable "$UNIT_NAME" >/dev/null
    if [ "$START" = 1 ]; then
      log "restarting $UNIT_NAME"
      systemctl restart "$UNIT_NAME"
    fi
    log "enabled; start with: systemctl start $UNIT_NAME; follow with: journalctl -fu $UNIT_NAME"
  else
    log "systemd is not running here: unit installed but not enabled"
  fi
fi
log "done"
