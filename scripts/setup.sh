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

# torch and torchvision come as a pair: a torchvision wheel is built against one torch release and
# does not import beside another (PyPI's torchvision next to the old 2.13.0 CPU wheel fails). So the
# check imports both: a venv from before torchvision (torch 2.13.0 alone) is upgraded here too.
# The pinned pair first (on this machine and CI pip takes both from local disk; it is the CUDA build,
# ~5.5 GB in the venv, which runs on the CPU); else the newest pair pip finds in the supported ranges.
# (No extra index such as PyTorch's own: CI reaches only the package registries, and pip waits
# minutes on an unreachable host.)
TORCH_PAIR=('torch==2.14.1' 'torchvision==0.29.1')
TORCH_RANGE=('torch>=2.3,<=2.14.1' 'torchvision>=0.18,<=0.29.1')  # as in pyproject.toml
torch_ok() { .venv/bin/python -c 'import torch, torchvision' 2>/dev/null; }
if ! torch_ok; then
  log "installing ${TORCH_PAIR[*]} (a large download where it is not on disk)"
  if ! "${pip[@]}" install "${TORCH_PAIR[@]}"; then
    log "${TORCH_PAIR[*]} not installable here; trying ${TORCH_RANGE[*]} from the package index"
    "${pip[@]}" install "${TORCH_RANGE[@]}"
  fi
  if ! torch_ok; then
    log "torch and torchvision were installed but do not import together:"
    .venv/bin/python -c 'import torch, torchvision' || true
    exit 1
  fi
  log "torch $(.venv/bin/python -c 'import torch, torchvision; print(torch.__version__, "+ torchvision", torchvision.__version__)')"
fi

extras="hw"
((want_test)) && extras="hw,dev"
stamp=".venv/.installed-$extras-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  log "installing the project (.[${extras}])"
  "${pip[@]}" install -e ".[${extras}]"
  touch "$stamp"
fi

# The CUDA build of torch brings triton (GPU kernels for torch.compile, which nothing here uses).
# Without a GPU it only costs: importing it (torch does, lazily, at its first optimiser) crashed the
# test process with a segfault in triton's C extension midway through `make test`. torch runs
# without it, so on a machine with no NVIDIA GPU it is removed (after the project install, which
# would bring it back as torch's dependency).
if ! nvidia-smi -L >/dev/null 2>&1 && .venv/bin/python -m pip show -q triton >/dev/null 2>&1; then
  log "no NVIDIA GPU: removing triton (torch.compile's GPU backend)"
  "${pip[@]}" uninstall -y triton
fi
log "venv ready"
