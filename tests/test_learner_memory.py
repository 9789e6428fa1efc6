"""`learner run` keeps freed memory for reuse, so a training step does not page-fault its large
temporaries in again every time (learner/memory.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# A step's worth of activation-sized temporaries ([256, 32, 47, 47] floats, 72 MB each), allocated
# and freed again step after step as in a training loop; prints the page faults of steps 6-11.
# (With freed memory kept, the first few steps still grow the heap while the blocks find their
# places, by a varying amount; after that a step faults nothing, or one block now and then.)
SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import torch
    from learner.memory import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    x = torch.ones(256, 32, 47, 47)
    late = 0
    for step in range(12):
        before = faults()
        y = torch.relu(x); z = y * 2; w = z + y; float(w.sum()); del y, z, w
        late += faults() - before if step >= 6 else 0
    print(applied, late)
    """
)


def late_faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True, timeout=120)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_freed_tensors_are_reused_instead_of_faulted_in_again():
    _, plain = late_faults("plain")
    applied, kept = late_faults("keep")
    assert applied
    pages_per_step = 3 * 256 * 32 * 47 * 47 * 4 // 4096
    assert plain > 4 * pages_per_step, f"without the setting each step maps fresh pages; saw {plain} faults"
    assert kept < plain / 4, f"{kept} page faults in 6 steps with freed memory kept vs {plain} without"
