#!/usr/bin/env bash
# Creates .venv and installs the project with everything the tests need.
# Idempotent: re-running only installs what is missing. Never prompts.
#   scripts/setup.sh          core + hardware extras (make demo)
#   scripts/setup.sh --test   also test tools and Debian's chromium (make test)
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1
log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }

# --- Debian packages: Mesa EGL for offscreen MuJoCo, libusb for pyrealsense2, hidapi for the
# SpaceMouse, chromium for the browser test.
debs=(libegl1 libegl-mesa0 libgl1-mesa-dri libusb-1.0-0 libhidapi-hidraw0 libhidapi-libusb0)
((want_test)) && debs+=(chromium)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo -n)
  export DEBIAN_FRONTEND=noninteractive
  apt_opts=(-o DPkg::Lock::Timeout=120 -o Acquire::Retries=3 -o Acquire::http::Timeout=60)
  timeout 900 "${sudo_cmd[@]}" apt-get "${apt_opts[@]}" update -qq ||
    log "apt-get update failed; trying to install from the current lists"
  timeout 1500 "${sudo_cmd[@]}" apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends \
    "${missing[@]}" </dev/null
fi

# --- the virtual environment
PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)

if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  # Prefer the CPU wheel on this machine's disk (small, no download); otherwise whatever the
  # configured indexes offer in the supported range. (No extra index such as PyTorch's own: CI
  # reaches only the package registries, and pip waits minutes on an unreachable host.)
  wheel=$(ls /opt/wheels/torch-2.13.0+cpu-cp311-*.whl 2>/dev/null | head -n1 || true)
  if [[ -n "$wheel" ]]; then
    log "installing torch from $wheel"
    "${pip[@]}" install "$wheel"
  else
    log "installing torch (>=2.3,<=2.14.1) from the package index"
    "${pip[@]}" install 'torch>=2.3,<=2.14.1'
  fi
fi

extras="hw"
((want_test)) && extras="hw,dev"
stamp=".venv/.installed-$extras-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  log "installing the project (.[${extras}])"
  "${pip[@]}" install -e ".[${extras}]"
  touch "$stamp"
fi
log "venv ready"
