#!/usr/bin/env bash
# Creates .venv-lerobot: the `lerobot` package in its own venv, for tests/test_lerobot_export.py,
# which loads `replay export --format lerobot` output with lerobot's own LeRobotDataset
# (tests/lerobot_dump.py). Idempotent (a stamp makes a re-run instant), never prompts, bounded.
#
# lerobot 0.4.4 is the newest release for Python 3.11 (0.5 and later need 3.12). It pins
# torch<2.11 and torchvision<0.26, and its dataset code imports torchvision. No lerobot release
# accepts our CPU torch 2.13, which has no torchvision to match either (PyPI's fails to import
# beside it: "operator torchvision::nms does not exist"); honouring the pins means downloading a
# CUDA torch 2.10 from PyPI, several GB. So this takes torch 2.14.1 + torchvision 0.29.1, which
# pip finds on this machine's disk (CUDA builds too, but no download), installs lerobot without its
# torch/torchvision/torchcodec pins and then every other requirement lerobot declares, in its own
# ranges. lerobot's dataset code only turns arrays into tensors, the same on any torch 2.x; the
# round-trip test is what shows the combination works. torchcodec (video decoding) is left out:
# exports store camera views as images.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[lerobot %(%H:%M:%S)T] %s\n' -1 "$*"; }
source scripts/venv_lib.sh

VERSION=0.4.4
TORCH=(torch==2.14.1 torchvision==0.29.1)
VENV=.venv-lerobot
stamp="$VENV/.ready-$VERSION-$(sha256sum "$0" | cut -c1-16)"
venv_ready_or_exit "$stamp" "$VENV, lerobot $VERSION"
venv_create "$VENV"
pip=(timeout 2400 "$VENV/bin/python" -m pip install -q --retries 3)

log "installing ${TORCH[*]}"
"${pip[@]}" "${TORCH[@]}" </dev/null
log "installing lerobot==$VERSION and its requirements but torch, torchvision and torchcodec"
"${pip[@]}" --no-deps --no-warn-conflicts "lerobot==$VERSION" </dev/null
reqs="$VENV/lerobot-requirements.txt"
"$VENV/bin/python" - "$reqs" <<'EOF'
import re
import sys
from importlib.metadata import requires

skip = {"torch", "torchvision", "torchcodec"}
keep = [r for r in requires("lerobot") or []
        if "extra ==" not in r and re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0].lower() not in skip]
open(sys.argv[1], "w").write("\n".join(keep) + "\n")
EOF
# torch named again so pip keeps the one it has; no warning about the torch pins set aside above.
"${pip[@]}" --no-warn-conflicts -r "$reqs" "${TORCH[@]}" </dev/null

log "checking that lerobot's LeRobotDataset imports"
timeout 300 "$VENV/bin/python" -c 'from lerobot.datasets.lerobot_dataset import LeRobotDataset' </dev/null
venv_mark_ready "$VENV" "$stamp"
log "ready ($VENV, lerobot $VERSION, $(du -sh "$VENV" | cut -f1))"
