"""The learner across torchrun ranks (learner/distributed.py): 2 CPU processes over gloo.

Each worker joins the job from the torchrun environment variables, the way `torchrun -m learner.cli
run` does, trains `Trainer.run` to a number of updates and dumps what the test compares.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
import torch.multiprocessing as mp

from learner.distributed import Group, world_size_from_env
from learner.state import latest
from learner.trainer import Trainer
from tests.learner_fakes import FakeStore, tiny_config

torch.set_num_threads(1)
SPAWN_TIMEOUT_S = 240  # generous: a loaded 2-core box imports torch slowly (pytest stops at 300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill_store(cfg) -> None:
    """Two demos per direction, then 100 practice steps: 20 seed steps, then 30 forward and 50
    backward agent steps owed."""
    st = FakeStore(cfg)
    for _ in range(2):
        st.episode("demo", "forward", 30, success=True)
        st.episode("demo", "backward", 30, success=True)
    for i in range(4):
        st.episode("practice", "forward" if i % 2 == 0 else "backward", 25)
    st.close()


def trained_state(tr: Trainer) -> dict[str, torch.Tensor]:
    """Every trained weight (actors, encoders, critics, targets, classifiers, log α) and the optimiser moments."""
    modules, tensors, optims = tr.core.state_parts()
    out = {f"{m}.{k}": v.detach().clone() for m, mod in modules.items() for k, v in mod.state_dict().items()}
    out |= {k: v.detach().clone() for k, v in tensors.items()}
    for name, opt in optims.items():
        for i, st in opt.state_dict()["state"].items():
            out |= {f"opt.{name}.{i}.{k}": v.clone() for k, v in st.items() if torch.is_tensor(v)}
    return out


def _train(group: Group, cfg, max_updates: int) -> dict:
    """One `learner run` on this rank, to `max_updates` agent updates: what the test compares."""
    requests: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        requests.append(f"{req.method} {req.url.path}")
        return httpx.Response(200, json={})

    tr = Trainer(cfg, tensorboard=False, transport=httpx.MockTransport(handler), device="cpu", dist=group)
    try:
        tr.poll(force=True)  # set-up and resume, on every rank together
        at_start = {d: a.updates for d, a in tr.agents.items()}
        tr.run(threading.Event(), max_updates=max_updates)
        saved = tr.save()
        group.barrier()
        if tr.pusher is not None:
            tr.pusher.wait_idle(10)
        return {
            "at_start": at_start,
            "updates": {d: a.updates for d, a in tr.agents.items()},
            "classifier_steps": {d: c.steps for d, c in tr.classifiers.items()},
            "state": trained_state(tr),
            "last_batch": torch.from_numpy(tr.core.batch.action.copy()),
            "saved": saved is not None,
            "saves": tr.saves,
            "pushes": [r for r in requests if r.startswith("PUT /policies/")],
        }
    finally:
        tr.close()


def _worker(rank: int, world: int, port: int, jobs: list[tuple[str, int]], out: str) -> None:
    """Join the job as torchrun would start us, then run each (run root, max updates) job in turn."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    group = Group.from_env("cpu")
    assert group is not None and group.rank == rank
    try:
        results = [_train(group, tiny_config(Path(root)), n) for root, n in jobs]
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        group.close()


def spawn(world: int, out: Path, jobs: list[tuple[Path, int]]) -> list[list[dict]]:
    """Each rank's results for each job (run root with its store and run dir, max updates)."""
    out.mkdir(exist_ok=True)
    args = (world, free_port(), [(str(root), n) for root, n in jobs], str(out))
    ctx = mp.start_processes(_worker, args=args,
                             nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{world} learner ranks did not finish in {SPAWN_TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"ranks differ in {differ[:5]}"


def test_two_ranks_stay_in_sync_and_resume_across_world_sizes(tmp_path):
    # Job A starts fresh on 2 ranks; job B resumes on 2 ranks what a single process saved.
    fresh, resumed = tmp_path / "fresh", tmp_path / "resumed"
    cfg_a, cfg_b = tiny_config(fresh), tiny_config(resumed)
    for root, cfg in ((fresh, cfg_a), (resumed, cfg_b)):
        root.mkdir()
        fill_store(cfg)
    with single(cfg_b) as tr:
        tr.poll(force=True)
        while sum(a.updates for a in tr.agents.values()) < 8:  # classifier steps first, then agent steps
            assert tr.train_once() is not None
        single_updates = {d: a.updates for d, a in tr.agents.items()}
        tr.save()
        single_state = trained_state(tr)

    (a0, b0), (a1, b1) = spawn(2, tmp_path / "ranks", [(fresh, 12), (resumed, 16)])

    # Same schedule on both ranks, every trained weight (and Adam moment) bit-identical ...
    assert a0["updates"] == a1["updates"] and sum(a0["updates"].values()) == 12
    assert a0["classifier_steps"] == a1["classifier_steps"] and min(a0["classifier_steps"].values()) >= 1
    assert any(k.startswith("forward.policy.") for k in a0["state"])
    assert any(k.startswith("clf_backward.") for k in a0["state"])
    assert_same_weights(a0["state"], a1["state"])
    # ... though each rank drew its own batches.
    assert not torch.equal(a0["last_batch"], a1["last_batch"])
    # Only rank 0 talks to the outside.
    assert a0["saved"] and a0["saves"] >= 1 and a0["pushes"]
    assert not a1["saved"] and a1["saves"] == 0 and a1["pushes"] == []

    # The single process's save, resumed on 2 ranks: both start from its step and stay identical.
    assert b0["at_start"] == b1["at_start"] == single_updates
    assert b0["updates"] == b1["updates"] and sum(b0["updates"].values()) == 16
    assert_same_weights(b0["state"], b1["state"])
    assert any(not torch.equal(b0["state"][k], single_state[k]) for k in single_state)  # it trained on
    counters = json.loads((latest(resumed / "run" / "state") / "counters.json").read_text())
    assert {d: a["updates"] for d, a in counters["agents"].items()} == b0["updates"]  # rank 0's final save

    # The 2-rank save of job A, resumed by a single process, trains on from the saved step.
    with single(cfg_a) as tr:
        tr.poll(force=True)
        assert {d: a.updates for d, a in tr.agents.items()} == a0["updates"]
        assert_same_weights(trained_state(tr), a0["state"])
        resumed_at = sum(a.updates for a in tr.agents.values())
        while sum(a.updates for a in tr.agents.values()) < resumed_at + 4:
            assert tr.train_once() is not None


def test_world_size_one_never_starts_torch_distributed(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert Group.from_env("cpu") is None
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(Exception, match="WORLD_SIZE must be an integer"):
        world_size_from_env()


@contextlib.contextmanager
def single(cfg) -> Iterator[Trainer]:
    tr = Trainer(cfg, tensorboard=False, transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    try:
        yield tr
    finally:
        tr.close()
