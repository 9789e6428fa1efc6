# Two entry points: `make demo` and `make test`. Each creates .venv on first use.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: demo test lint venv venv-test franka-sim lerobot bench clean

venv:
	@bash scripts/setup.sh

venv-test:
	@bash scripts/setup.sh --test

franka-sim:
	@bash scripts/setup_franka_sim.sh

lerobot:
	@bash scripts/setup_lerobot_venv.sh

demo: venv
	$(PY) -m robot_server.demo --minutes $${DEMO_MINUTES:-4}

lint: venv-test
	$(VENV)/bin/ruff check .

test: venv-test franka-sim
	@date '+[make test %H:%M:%S] ruff'
	$(VENV)/bin/ruff check .
	@date '+[make test %H:%M:%S] import contracts (the floor plan)'
	$(VENV)/bin/lint-imports
	@date '+[make test %H:%M:%S] pytest'
	$(PY) -m pytest $(PYTEST_ARGS)
	@date '+[make test %H:%M:%S] done'

bench: venv
	$(PY) bench/loop.py
	$(PY) bench/store.py
	$(PY) bench/sampling.py

clean:
	rm -rf $(VENV) .venv-franka-sim .venv-lerobot data runs .pytest_cache
