# Sourced by the setup scripts that give a tool its own venv (setup_franka_sim.sh,
# setup_lerobot_venv.sh): the steps they share. The caller sets `set -euo pipefail`, stands in the
# repository root and defines `log`.

# venv_ready_or_exit STAMP MESSAGE: a previous run finished (its stamp is there): say so and stop.
venv_ready_or_exit() {
  if [[ -f "$1" ]]; then
    log "ready ($2)"
    exit 0
  fi
}

# venv_create DIR: the venv at DIR, made with $PYTHON (default python3) when it has none; pip is then
# set never to prompt and to give up on a dead index within its timeout.
venv_create() {
  local py=${PYTHON:-python3}
  if [[ ! -x "$1/bin/python" ]]; then
    log "creating $1 with $($py --version)"
    timeout 300 "$py" -m venv "$1"
  fi
  export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=60
}

# venv_mark_ready DIR STAMP: this run finished; older stamps go, so a changed recipe runs again.
venv_mark_ready() {
  rm -f "$1"/.ready-*
  touch "$2"
}
