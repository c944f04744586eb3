#!/usr/bin/env bash
# Install or update the inspection station as a systemd service.  Idempotent: run it again after
# pulling a new version; it never overwrites the operator's station.yaml or recipes.
#
#   sudo deploy/install.sh [--extras gpu] [--wheelhouse DIR] [--start]
#
# Torch: constraints.txt pins the CPU build (torch==2.13.0+cpu, from the PyTorch CPU index) for
# CPU installs (--extras vlm); --extras gpu drops that pin and installs torch 2.13.0 from PyPI
# (its Linux build is the CUDA one; --torch-index URL picks another, e.g. .../whl/cu128), then
# checks that the installed torch has CUDA.
#
# What it does:
#   1. system user/group "inspection" (no login, no home), added to video and render
#   2. folders: /etc/inspection-station{,/recipes}   root:inspection 0750
#               /var/lib/inspection-station{,/recordings}, /var/cache/inspection-station
#                                                    inspection:inspection 0750
#   3. venv /opt/inspection-station/venv with this source tree installed into it
#   4. /etc/inspection-station/station.yaml from deploy/station.example.yaml (only if missing;
#      the current example is always written as station.example.yaml beside it)
#   5. /etc/systemd/system/inspection-station.service, daemon-reload, enable; the PLC bridges'
#      units (inspection-station-bridge-*.service) installed but left disabled; docs/ beside
#      the venv (the units' Documentation=)
#   6. --start: `station check-config` on station.yaml first; the service is (re)started only
#      when it passes (the example config names a recipe that does not exist yet)
#
# --root DIR stages everything under DIR instead of / (packaging, tests): no user is created,
# nothing is chowned, systemctl is not called.  STATION_BIN=EXE: the station that --start's
# check-config runs (default: the venv's; for --no-venv).
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
SHOW_PIP=0
TORCH_INDEX=""
CONF_DIR=/etc/inspection-station
STATE_DIR=/var/lib/inspection-station
CACHE_DIR=/var/cache/inspection-station
UNIT_NAME=inspection-station.service

usage() {
  sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
  cat <<EOF
Options:
  --prefix DIR       install prefix (default $PREFIX)
  --user NAME        service user (default $SVC_USER)
  --extras LIST      pip extras, comma-separated: gpu, vlm, genicam (default: none, CPU metric
                     judge only)
  --wheelhouse DIR   install offline from wheels in DIR (pip --no-index --find-links)
  --python EXE       interpreter for the venv (default $PYTHON)
  --root DIR         stage under DIR (no user, no chown, no systemctl)
  --no-venv          skip the venv (folders, config and unit only)
  --no-systemd       do not call systemctl
  --torch-index URL  package index for torch (default: PyTorch's CPU index for CPU installs
                     with torch, PyPI for --extras gpu)
  --show-pip         print the pip command and the constraints it would use, install nothing
  --start            (re)start the service at the end, only if check-config passes
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
    --show-pip) SHOW_PIP=1; shift ;;
    --torch-index) TORCH_INDEX=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

log() { echo "== $*"; }
r() { printf '%s%s' "$ROOT" "$1"; }  # a path under the staging root

# pip arguments: constraints (the CPU torch pin only for CPU installs) and the torch index ------
gpu=0; torch=0
IFS=',' read -r -a extras_list <<<"$EXTRAS"
for e in "${extras_list[@]}"; do
  case "$(echo "$e" | tr -d ' ')" in
    gpu) gpu=1; torch=1 ;;
    vlm) torch=1 ;;
  esac
done
pip_args=(--disable-pip-version-check --quiet)
[ -n "$WHEELHOUSE" ] && pip_args+=(--no-index --find-links "$WHEELHOUSE")
constraints=""
if [ -f "$SRC/constraints.txt" ]; then
  if [ "$gpu" = 1 ]; then
    # the same versions, but torch without the "+cpu" build: PyPI's Linux torch is the CUDA one
    constraints=$(mktemp)
    cleanup+=("$constraints")
    sed -E 's/^(torch==[^+[:space:]]+)\+cpu[[:space:]]*$/\1/' "$SRC/constraints.txt" >"$constraints"
  else
    constraints="$SRC/constraints.txt"
  fi
  pip_args+=(-c "$constraints")
fi
if [ "$torch" = 1 ] && [ -z "$WHEELHOUSE" ]; then
  if [ -n "$TORCH_INDEX" ]; then
    pip_args+=(--extra-index-url "$TORCH_INDEX")
  elif [ "$gpu" = 0 ]; then
    pip_args+=(--extra-index-url https://download.pytorch.org/whl/cpu)
  fi
fi
if [ "$SHOW_PIP" = 1 ]; then
  echo "pip install ${pip_args[*]} --upgrade <source>${EXTRAS:+[$EXTRAS]}"
  if [ -n "$constraints" ]; then
    echo "constraints ($constraints):"
    sed 's/^/  /' "$constraints"
  fi
  exit 0
fi

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
  log "installing $spec into the venv"
  "$VENV/bin/python" -m pip install "${pip_args[@]}" --upgrade "$spec"
  "$VENV/bin/station" --version
  if [ "$gpu" = 1 ]; then
    cuda=$("$VENV/bin/python" -c 'import torch; print(torch.version.cuda or "")' 2>/dev/null || true)
    if [ -z "$cuda" ]; then
      have=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>&1 | tail -1)
      echo "install.sh: --extras gpu, but the torch installed has no CUDA ($have); give" \
           "--torch-index https://download.pytorch.org/whl/cu128 or a wheelhouse with a CUDA torch" >&2
      exit 1
    fi
    log "torch with CUDA $cuda"
  fi
fi
STATION_BIN=${STATION_BIN:-$(r "$PREFIX/venv/bin/station")}

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

# 5. systemd units (the station's, and the PLC bridges' which stay disabled until wanted) -----
# and the documentation the units name (Documentation=file:$PREFIX/docs/...)
install -d -m 0755 "$(r "$PREFIX/docs")"
for doc in "$SRC"/docs/*.md; do
  [ -e "$doc" ] || continue
  cmp -s "$doc" "$(r "$PREFIX/docs/$(basename "$doc")")" ||
    install -m 0644 "$doc" "$(r "$PREFIX/docs/$(basename "$doc")")"
done
changed=0
bridge_units=()
for src_unit in "$SRC/deploy/$UNIT_NAME" "$SRC"/deploy/inspection-station-bridge-*.service; do
  [ -e "$src_unit" ] || continue
  name=$(basename "$src_unit")
  [ "$name" = "$UNIT_NAME" ] || bridge_units+=("${name%.service}")
  unit=$(r "/etc/systemd/system/$name")
  tmp_unit=$(mktemp)
  cleanup+=("$tmp_unit")
  sed -e "s|/opt/inspection-station/venv|$PREFIX/venv|g" \
      -e "s|/opt/inspection-station/docs|$PREFIX/docs|g" \
      -e "s|^User=inspection$|User=$SVC_USER|" -e "s|^Group=inspection$|Group=$SVC_USER|" \
      "$src_unit" >"$tmp_unit"
  if ! cmp -s "$tmp_unit" "$unit"; then
    log "unit $unit"
    install -m 0644 "$tmp_unit" "$unit"
    changed=1
  fi
done

# 6. --start only on a configuration that passes check-config -------------------------------
config_ok=1
if [ "$START" = 1 ]; then
  if [ ! -x "$STATION_BIN" ]; then
    echo "install.sh: --start: $STATION_BIN missing (installed without the venv?)" >&2
    exit 1
  fi
  log "checking $cfg"
  if ! "$STATION_BIN" check-config "$cfg"; then
    config_ok=0
  fi
fi

if [ -z "$ROOT" ] && [ "$DO_SYSTEMD" = 1 ]; then
  if [ -d /run/systemd/system ]; then
    [ "$changed" = 1 ] && systemctl daemon-reload
    systemctl enable "$UNIT_NAME" >/dev/null
    if [ "$START" = 1 ] && [ "$config_ok" = 1 ]; then
      log "restarting $UNIT_NAME"
      systemctl restart "$UNIT_NAME"
    fi
    log "enabled; start with: systemctl start $UNIT_NAME; follow with: journalctl -fu $UNIT_NAME"
  else
    log "systemd is not running here: unit installed but not enabled"
  fi
fi

station="$PREFIX/venv/bin/station"
conf="$CONF_DIR/station.yaml"
cat <<NEXT

Next steps:
  1. find the camera:   $station camera list
  2. grab good parts:   $station camera grab SOURCE -n 20 -o /tmp/good
     build a recipe:    $station golden build /tmp/good -o $CONF_DIR/recipes/NAME --grid grid.yaml
  3. edit $conf: station.id, camera, recipe: $CONF_DIR/recipes/NAME
  4. check it:          $station check-config $conf
  5. start it:          systemctl restart $UNIT_NAME   (or install.sh --start)
     follow it:         journalctl -fu $UNIT_NAME;  $station watch tcp://localhost:5556
NEXT
if [ ${#bridge_units[@]} -gt 0 ]; then
  echo "  6. PLC bridges (--extras ...,bridges; docs/BRIDGES.md), each when wanted:"
  for b in "${bridge_units[@]}"; do
    echo "                        systemctl enable --now $b"
  done
fi
if [ "$config_ok" = 0 ]; then
  echo "install.sh: not starting $UNIT_NAME: $cfg does not pass check-config (above);" \
       "fix it, then run install.sh --start again" >&2
  exit 78
fi
log "done"
