"""`learner run` keeps freed memory for reuse (learner/memory.py); bench/learner_memory.py counts
the page faults it saves."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# In a child process: the setting lasts for the life of the process that makes it.
SCRIPT = textwrap.dedent(
    """
    import torch
    from learner.memory import keep_freed_memory
    first, again = keep_freed_memory(), keep_freed_memory()
    x = torch.ones(256, 32, 47, 47)  # 72 MB, above glibc's default mmap threshold
    for _ in range(3):
        y = torch.relu(x) * 2; assert float(y[0, 0, 0, 0]) == 2.0; del y
    print(first, again)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_glibc_accepts_the_setting_and_large_tensors_still_come_and_go():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["True", "True"]  # applied, and a second call is harmless
