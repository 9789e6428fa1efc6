"""Page faults of a training-like step with and without learner.memory.keep_freed_memory().

A step's worth of activation-sized temporaries ([256, 32, 47, 47] floats, 72 MB each) is allocated
and freed again step after step, as in a training loop, in a fresh process per setting. With glibc's
defaults every such block is a fresh mmap, so each step faults its pages in again; with freed memory
kept, the first few steps grow the heap while the blocks find their places (by a varying amount)
and after that a step faults nothing, or one block now and then. Reported: the minor page faults
of steps 6-11 (the settled heap) per setting, and what one step's blocks would fault if all fresh.

Writes bench/results/learner_memory.json.   Usage: python bench/learner_memory.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

STEPS, SETTLED = 12, 6
SCRIPT = textwrap.dedent(
    f"""
    import resource, sys
    import torch
    from learner.memory import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    x = torch.ones(256, 32, 47, 47)
    late = 0
    for step in range({STEPS}):
        before = faults()
        y = torch.relu(x); z = y * 2; w = z + y; float(w.sum()); del y, z, w
        late += faults() - before if step >= {SETTLED} else 0
    print(applied, late)
    """
)


def settled_faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True, timeout=300)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "learner_memory.json")
    args = ap.parse_args()
    _, plain = settled_faults("plain")
    applied, kept = settled_faults("keep")
    pages_per_step = 3 * 256 * 32 * 47 * 47 * 4 // 4096  # three 72 MB temporaries
    steps = STEPS - SETTLED
    print(f"page faults in steps {SETTLED}-{STEPS - 1}: {plain} with glibc's defaults, {kept} with freed memory kept "
          f"(applied: {applied}); all-fresh blocks would fault {pages_per_step} per step, {steps * pages_per_step} in all")
    result = {
        "steps_counted": steps,
        "pages_per_step_if_fresh": pages_per_step,
        "faults_plain": plain,
        "faults_kept": kept,
        "keep_applied": applied,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
