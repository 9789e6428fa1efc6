"""An in-process daemon (sim, or franky on franka-sim) for tests that drive the supervisor directly (no HTTP)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from robot_server.daemon import Daemon
from robot_server.fault_injection import InjectSpec
from spec.config import load_config


def wait_until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise TimeoutError(f"{what} within {timeout} s")


@contextmanager
def inproc_daemon(config: str | Path, tmp: Path, env: Mapping[str, str] | None = None,
                  inject: Sequence[InjectSpec] = ()) -> Iterator[Daemon]:
    """A config (a packaged one's name: `sim`, `franka`; or a path) with a private store and
    checkpoint dir, started and stopped; `env`: more ROBOT__SECTION__FIELD overrides; `inject`:
    device faults to rehearse (--inject)."""
    cfg = load_config(config, env={
        "ROBOT__STORE__PATH": str(tmp / "store.zarr"),
        "ROBOT__SERVER__CHECKPOINT_DIR": str(tmp / "policies"),
        "ROBOT__CONTROL__STATUS_LINE": "false",
        **(env or {}),
    })
    d = Daemon(cfg, inject=inject)
    d.start()
    try:
        yield d
    finally:
        d.stop()


def sim_daemon(tmp: Path, env: Mapping[str, str] | None = None,
               inject: Sequence[InjectSpec] = ()) -> AbstractContextManager[Daemon]:
    """The packaged sim config, as `inproc_daemon` starts it."""
    return inproc_daemon("sim", tmp, env, inject)
