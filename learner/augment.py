"""Random shift (DrQ-v2): replicate-pad by `pad`, then crop back at an integer offset in
[-pad, pad] per image.

The shifts are whole pixels, so the crop is a gather with clamped indices (clamping is replicate
padding) rather than DrQ-v2's bilinear `grid_sample`: the same pixels, without padding a copy or
interpolating, and it works on uint8 so frames are widened to float only once, after the shift.
Frames are channels last ([B, H, W, C], the layout of the store and the buffers), so the gather
moves whole pixels (C bytes each) in one `index_select` and its output is already the encoder's
input layout; bench/sampling.py times it.
"""

from __future__ import annotations

import torch


def random_shift(
    x: torch.Tensor,
    pad: int = 4,
    shifts: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """x: [B, H, W, C] of any dtype. `shifts` [B, 2] integer (dx, dy) in [-pad, pad] (random if None).

    A shift of (dx, dy) makes output pixel (y, x) show input pixel (y + dy, x + dx), clamped to the
    border (replicate padding). The result is a new contiguous [B, H, W, C] tensor of x's dtype."""
    if x.dim() != 4:
        raise ValueError(f"random_shift expects [B, H, W, C], got shape {list(x.shape)}")
    b, h, w, c = x.shape
    if pad == 0:
        return x
    if shifts is None:
        shifts = torch.randint(-pad, pad + 1, (b, 2), generator=generator, device=x.device)
    shifts = shifts.to(device=x.device, dtype=torch.long)
    rows = (torch.arange(h, device=x.device) + shifts[:, 1:2]).clamp_(0, h - 1)  # [B, H]
    cols = (torch.arange(w, device=x.device) + shifts[:, 0:1]).clamp_(0, w - 1)  # [B, W]
    first = torch.arange(b, device=x.device).view(b, 1, 1) * (h * w)
    source = (first + rows[:, :, None] * w + cols[:, None, :]).view(-1)  # pixel read by each output pixel
    return x.reshape(b * h * w, c).index_select(0, source).view(b, h, w, c)
