#!/usr/bin/env bash
# Creates .venv-franka-sim (PyPI franka-sim, a MuJoCo server speaking the libfranka protocol) and
# the offline FR3 model it is started with (FR3_MJCF), for tests/test_franky_sim.py and bench/.
# franka-sim pins numpy 1.26 and mujoco < 3.3, hence its own venv. Its default model would be
# downloaded at run time, which fails offline; scripts/franka_sim_model.py builds one from the
# URDF it ships instead. Idempotent (a stamp makes a re-run instant), never prompts, bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[franka-sim %(%H:%M:%S)T] %s\n' -1 "$*"; }
source scripts/venv_lib.sh

VERSION=1.1.7
VENV=.venv-franka-sim
MODEL=$VENV/fr3_offline.xml
stamp="$VENV/.ready-$VERSION-$(sha256sum scripts/franka_sim_model.py | cut -c1-16)"
if [[ -f "$MODEL" && -x "$VENV/bin/franka-sim-check" ]]; then
  venv_ready_or_exit "$stamp" "$VENV, $MODEL"
fi

venv_create "$VENV"
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('franka-sim') != '$VERSION')" 2>/dev/null; then
  log "installing franka-sim==$VERSION"
  timeout 1200 "$VENV/bin/python" -m pip install -q --retries 3 "franka-sim==$VERSION" </dev/null
fi

log "building the offline FR3 model"
timeout 300 "$VENV/bin/python" scripts/franka_sim_model.py "$MODEL" </dev/null
venv_mark_ready "$VENV" "$stamp"
log "ready ($VENV, $MODEL)"
