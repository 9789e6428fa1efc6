"""Setting up a network for CPU inference in the daemon, shared by PolicyRunner and ClassifierRunner.

The daemon process also runs cameras, the store writer and a web server on a small machine, so
inference uses one intra-op thread by default; torch's thread pool is process-wide, so None
leaves it alone (e.g. in a learner process).
"""

from __future__ import annotations

import torch
from torch import nn

from spec.step import ObsSpec


def prepare_for_inference(net: nn.Module, encoder: nn.Module, spec: ObsSpec, num_threads: int | None) -> None:
    """Set torch's thread count, freeze `net`, and keep a pixel `encoder`'s convolution weights
    channels last, the memory format of the stored and live frames (no copy per call)."""
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    for p in net.parameters():
        p.requires_grad_(False)
    if spec.mode == "pixels":
        encoder.to(memory_format=torch.channels_last)
