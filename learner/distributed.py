"""Multi-GPU `learner run` under torchrun: the process group and the few collectives the trainer needs.

    torchrun --nproc-per-node N -m learner.cli run --config robot.yaml [...]

World size 1 (no torchrun, or `--nproc-per-node 1`) never touches torch.distributed: `from_env()`
returns None and the trainer runs exactly as a single process does.

With N > 1 ranks every rank holds the whole learning core (buffers, both agents, both classifiers)
and samples its own batches (its own seed); gradients are averaged across ranks before every
optimiser step, so the weights stay bit-identical on every rank and each update sees N batches.
Rank 0 is the only one that talks to the outside: it decides when to read the store (and which
steps to read, so every rank ingests exactly the same data and runs the same schedule), logs to
TensorBoard, pushes policies and classifiers and writes the training checkpoint.

Why an explicit gradient all-reduce and not DistributedDataParallel: the agent calls its modules'
pieces directly (`critic.trunk`, `critic.head`, the classifier's `features` / `logits_from_features`),
runs the actor twice before one backward (RL and BC batches), backprops the actor loss with
`inputs=` (so the critic's weights get no gradient on that pass) and trains a bare tensor
(log α). DDP's reducer only sees gradients of its wrapper's own forward and expects every
parameter it wraps to get one per backward; all of the above break that. A hook on each
optimiser's step averages exactly the gradients that optimiser is about to apply, whatever
produced them: one coalesced all-reduce per step, and agent.py / classifier.py stay as they are.
The training checkpoint therefore holds plain (unwrapped) state dicts and resumes at any world size.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

log = logging.getLogger(__name__)

T = TypeVar("T")

# A collective that waits longer than this means a rank died or diverged: fail instead of hanging.
TIMEOUT = datetime.timedelta(minutes=10)


class DistributedError(RuntimeError):
    """The ranks disagree (they would deadlock or drift apart): stop with a message."""


def world_size_from_env(env: dict[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    raw = env.get("WORLD_SIZE", "1")
    try:
        n = int(raw)
    except ValueError:
        raise DistributedError(f"WORLD_SIZE must be an integer, got {raw!r}") from None
    if n < 1:
        raise DistributedError(f"WORLD_SIZE must be at least 1, got {n}")
    return n


def pick_device(requested: str, local_rank: int) -> torch.device:
    """cuda:LOCAL_RANK when the request allows CUDA and it is there (one GPU per rank), else the CPU.
    An explicit `cuda:N` is replaced by the rank's own GPU: under torchrun the rank picks it."""
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DistributedError(f"--device {requested}: CUDA is not available on this machine")
    if local_rank >= torch.cuda.device_count():
        raise DistributedError(
            f"LOCAL_RANK {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
            "use --nproc-per-node at most that, or --device cpu"
        )
    return torch.device("cuda", local_rank)


@dataclass
class Group:
    """This process's place in the torchrun job and the collectives over it."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, requested_device: str = "auto") -> Group | None:
        """Join the torchrun job described by the environment (RANK, WORLD_SIZE, LOCAL_RANK,
        MASTER_ADDR, MASTER_PORT); None when the world size is 1: then torch.distributed is never used."""
        n = world_size_from_env()
        if n == 1:
            return None
        missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise DistributedError(f"WORLD_SIZE={n} but {missing} not set: start the learner with torchrun")
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        device = pick_device(requested_device, local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL's object collectives use the current device
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=n, timeout=TIMEOUT)
        log.info("rank %d of %d (local %d) on %s, backend %s", rank, n, local_rank, device, backend)
        return cls(rank=rank, world_size=n, local_rank=local_rank, device=device)

    # --- collectives ---
    def _tensor(self, values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64, device=self.device)

    def share(self, obj: T) -> T:
        """Rank 0's `obj` on every rank (the others pass anything, e.g. None)."""
        box: list[Any] = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def any_of(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag, true if it is true on any rank (one small all-reduce)."""
        t = self._tensor([float(f) for f in flags])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in t.tolist())

    def check_same(self, what: str, value: Any) -> None:
        """Raise on every rank if `value` differs between ranks (they would drift apart or deadlock)."""
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        if any(v != values[0] for v in values[1:]):
            raise DistributedError(f"ranks disagree on {what}: " + ", ".join(
                f"rank {r}: {v}" for r, v in enumerate(values)))

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def broadcast_modules(self, modules: Iterable[nn.Module], tensors: Iterable[torch.Tensor] = ()) -> None:
        """Rank 0's parameters and buffers (e.g. spectral-norm vectors) into every rank's copies."""
        with torch.no_grad():
            for m in modules:
                for t in [*m.parameters(), *m.buffers()]:
                    dist.broadcast(t.data, src=0)
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def average_gradients_before_step(self, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        """Before each `opt.step()`, replace the gradients it will apply by their mean over the ranks."""
        for opt in optimizers:
            opt.register_step_pre_hook(self._average_hook)

    def _average_hook(self, opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return
        # One all-reduce per step for all of this optimiser's gradients, per dtype.
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for g in grads:
            by_dtype.setdefault(g.dtype, []).append(g)
        for same in by_dtype.values():
            flat = _flatten_dense_tensors(same)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat.div_(self.world_size)
            for g, avg in zip(same, _unflatten_dense_tensors(flat, same), strict=True):
                g.copy_(avg)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
