"""Pixel decoder: encoder feature maps -> interface memory (encoder stride) + mask features (mask stride)."""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ImageFeatures", "PixelDecoder", "sine_positions"]


@dataclasses.dataclass
class ImageFeatures:
    """What ``FindModel.encode_image`` returns; the interface reads only this."""

    memory: torch.Tensor
    """(B, N, C) image tokens at the encoder stride, attended to by the queries."""
    memory_hw: tuple[int, int]
    """(h, w) grid of ``memory`` (N = h * w)."""
    memory_pos: torch.Tensor
    """(N, C) fixed 2D sine position code of the memory tokens."""
    mask_features: torch.Tensor
    """(B, C, h, w) per-pixel features at the mask stride; masks are dot products with them."""

    @property
    def batch(self) -> int:
        return int(self.memory.shape[0])

    def expand(self, b: int) -> "ImageFeatures":
        """The same features repeated to batch ``b`` (from batch 1)."""
        return ImageFeatures(self.memory.expand(b, -1, -1), self.memory_hw, self.memory_pos,
                             self.mask_features.expand(b, -1, -1, -1))


def sine_positions(h: int, w: int, dim: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """(h*w, dim) 2D sine/cosine code of normalised (y, x) positions (half the channels each)."""
    q = dim // 4
    freq = torch.exp(torch.arange(q, device=device, dtype=torch.float32) * (-math.log(1000.0) / max(q, 1)))
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 * math.pi
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 * math.pi
    py = ys[:, None] * freq[None] * 8
    px = xs[:, None] * freq[None] * 8
    py = torch.cat([py.sin(), py.cos()], dim=1)[:, None, :].expand(h, w, 2 * q)
    px = torch.cat([px.sin(), px.cos()], dim=1)[None, :, :].expand(h, w, 2 * q)
    pos = torch.cat([py, px], dim=2).reshape(h * w, 4 * q)
    if pos.shape[1] < dim:
        pos = F.pad(pos, (0, dim - pos.shape[1]))
    return pos.to(dtype)


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, c), c)


class PixelDecoder(nn.Module):
    """Fuse the encoder levels (1x1 lateral convs, summed) into the memory; upsample it to the mask stride
    and add a small strided conv stem on the raw image so masks keep edges the ViT patches blur."""

    def __init__(self, *, in_channels: int, num_levels: int, hidden: int, mask_stride: int, stem_channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Sequential(nn.Conv2d(in_channels, hidden, 1), _gn(hidden))
                                     for _ in range(num_levels))
        self.fuse = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), _gn(hidden), nn.GELU())
        stem: list[nn.Module] = []
        c_in = 3
        for _ in range(int(round(math.log2(mask_stride)))):
            stem += [nn.Conv2d(c_in, stem_channels, 3, stride=2, padding=1), nn.GELU()]
            c_in = stem_channels
        stem += [nn.Conv2d(c_in, hidden, 1)]
        self.stem = nn.Sequential(*stem)
        self.out = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), _gn(hidden), nn.GELU(),
                                 nn.Conv2d(hidden, hidden, 1))
        self.mask_stride = mask_stride
        self.hidden = hidden

    def forward(self, maps: list[torch.Tensor], images: torch.Tensor) -> ImageFeatures:
        """``maps`` from the vision encoder; ``images`` the normalised-free [0, 1] encoder input (B, 3, H, W)."""
        size = maps[0].shape[-2:]
        x = 0
        for lat, m in zip(self.lateral, maps):
            y = lat(m)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            x = x + y
        mem = self.fuse(x)
        H, W = images.shape[-2:]
        hw = (H // self.mask_stride, W // self.mask_stride)
        up = F.interpolate(mem, size=hw, mode="bilinear", align_corners=False)
        stem = self.stem(images * 2.0 - 1.0)
        if stem.shape[-2:] != hw:
            stem = F.interpolate(stem, size=hw, mode="bilinear", align_corners=False)
        mask_features = self.out(up + stem)
        B, C, h, w = mem.shape
        pos = sine_positions(h, w, C, device=mem.device, dtype=mem.dtype)
        return ImageFeatures(memory=mem.flatten(2).transpose(1, 2), memory_hw=(h, w), memory_pos=pos,
                             mask_features=mask_features)
