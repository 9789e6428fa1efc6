"""Random shift (DrQ-v2): replicate-pad by `pad`, then crop back at an integer offset in
[-pad, pad] per image, done with a bilinear grid sample so it runs batched on the training device."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(
    x: torch.Tensor,
    pad: int = 4,
    shifts: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """x: float [B, C, H, W]. `shifts` [B, 2] integer (dx, dy) in [-pad, pad] (random if None).

    A shift of (dx, dy) makes output pixel (y, x) show input pixel (y + dy, x + dx), clamped to the
    border (replicate padding)."""
    if x.dim() != 4:
        raise ValueError(f"random_shift expects [B, C, H, W], got shape {list(x.shape)}")
    b, _, h, w = x.shape
    if pad == 0:
        return x
    if shifts is None:
        shifts = torch.randint(-pad, pad + 1, (b, 2), generator=generator, device=x.device)
    shifts = shifts.to(device=x.device, dtype=x.dtype)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    hp, wp = h + 2 * pad, w + 2 * pad
    # Pixel centres of the un-shifted crop in the padded image, in grid_sample's [-1, 1] units
    # (align_corners=False: pixel j of n sits at (2j + 1)/n − 1).
    xs = (2 * (torch.arange(w, device=x.device, dtype=x.dtype) + pad) + 1) / wp - 1
    ys = (2 * (torch.arange(h, device=x.device, dtype=x.dtype) + pad) + 1) / hp - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([gx, gy], dim=-1).unsqueeze(0)  # [1, H, W, 2] as (x, y)
    offset = shifts * torch.tensor([2.0 / wp, 2.0 / hp], device=x.device, dtype=x.dtype)
    grid = base + offset.view(b, 1, 1, 2)
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
