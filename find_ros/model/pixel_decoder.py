"""Pixel decoders: encoder feature maps -> interface memory + mask features (mask stride).

:class:`PixelDecoder` serves single-stride ViT / SAM encoders; :class:`FpnPixelDecoder` fuses the levels of a
hierarchical backbone (strides 4-32) top-down, FPN style, so masks keep the stride-4 detail.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ImageFeatures", "PixelDecoder", "FpnPixelDecoder", "sine_positions"]


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
    attention_features: torch.Tensor | None = None
    """(B, C, *memory_hw) the mask features averaged over each memory cell, or None. When given, the masked
    cross-attention of each interface layer reads the queries' mask logits on them (the average logit of a cell)
    instead of resampling full-resolution logits: 1/16 of the work at stride 4 vs 16."""

    @property
    def batch(self) -> int:
        return int(self.memory.shape[0])

    def expand(self, b: int) -> "ImageFeatures":
        """The same features repeated to batch ``b`` (from batch 1)."""
        att = None if self.attention_features is None else self.attention_features.expand(b, -1, -1, -1)
        return ImageFeatures(self.memory.expand(b, -1, -1), self.memory_hw, self.memory_pos,
                             self.mask_features.expand(b, -1, -1, -1), att)


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


def _sine_1d(n: int, dim: int, ref: torch.Tensor) -> torch.Tensor:
    """(n, dim) sine/cosine code of normalised positions (i + 0.5) / n along one axis."""
    q = dim // 2
    freq = torch.exp(torch.arange(q, device=ref.device, dtype=torch.float32) * (-math.log(1000.0) / max(q, 1)))
    t = (torch.arange(n, device=ref.device, dtype=torch.float32) + 0.5) / n * 2 * math.pi
    a = t[:, None] * freq[None] * 8
    return torch.cat([a.sin(), a.cos()], dim=1).to(ref.dtype)


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, c), c)


class PixelDecoder(nn.Module):
    """Fuse the encoder levels (1x1 lateral convs, summed) into the memory; upsample it to the mask stride
    and add a small strided conv stem on the raw image so masks keep edges the ViT patches blur."""

    def __init__(self, *, in_channels: int, num_levels: int, hidden: int, mask_stride: int, stem_channels: int) -> None:
        super().__init__()
        self.mask_channels = hidden
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

    def reference_features(self, mask_features: torch.Tensor) -> torch.Tensor:
        """The per-pixel features a reference prompt is pooled from: the mask features themselves."""
        return mask_features

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


class _SepConv(nn.Module):
    """Depthwise 3x3 + group norm + GELU + pointwise 1x1: the cheap smoothing conv of the FPN levels (linear
    output, so the finest level can serve as signed mask features directly)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.norm = _gn(c)
        self.pw = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(F.gelu(self.norm(self.dw(x))))


class FpnPixelDecoder(nn.Module):
    """FPN over a hierarchical backbone: 1x1 laterals to ``fpn_channels``, top-down sum with bilinear upsampling,
    a depthwise-separable smoothing conv per level. The level nearest ``memory_stride`` (plus its backbone map)
    becomes the interface memory (``hidden`` channels); the finest level, resampled to the mask stride plus a
    learned projection of a separable sine position code (so a query can prefer a place, e.g. "left of"), becomes
    the mask features (``fpn_channels``; the heads project queries into that width).
    """

    def __init__(self, *, in_channels: list[int], strides: list[int], hidden: int, fpn_channels: int,
                 mask_stride: int, memory_stride: int) -> None:
        super().__init__()
        if len(in_channels) != len(strides) or not strides:
            raise ValueError(f"FPN needs one channel count per stride, got {in_channels} and {strides}")
        if list(strides) != sorted(strides):
            raise ValueError(f"FPN levels must be ordered fine to coarse, got strides {strides}")
        Fc = int(fpn_channels)
        self.strides = [int(s) for s in strides]
        self.lateral = nn.ModuleList(nn.Sequential(nn.Conv2d(c, Fc, 1), _gn(Fc)) for c in in_channels)
        self.smooth = nn.ModuleList(_SepConv(Fc) for _ in in_channels)
        self.memory_level = int(min(range(len(strides)), key=lambda i: (abs(math.log2(strides[i] / memory_stride)), i)))
        self.memory_fpn = nn.Conv2d(Fc, hidden, 1)
        self.memory_backbone = nn.Sequential(nn.Conv2d(in_channels[self.memory_level], hidden, 1), _gn(hidden))
        self.memory_out = nn.Sequential(_gn(hidden), nn.GELU(), nn.Conv2d(hidden, hidden, 1))
        self.pos_dim = 16
        self.mask_pos_y = nn.Linear(self.pos_dim, Fc, bias=False)
        self.mask_pos_x = nn.Linear(self.pos_dim, Fc, bias=False)
        # zero at start: masks begin from appearance alone and take position in as far as the losses ask for it
        nn.init.zeros_(self.mask_pos_y.weight)
        nn.init.zeros_(self.mask_pos_x.weight)
        self.mask_stride = mask_stride
        self.hidden = hidden
        self.mask_channels = Fc
        """Channels of the mask features (the FPN width: masks are dot products in it, 1/2 of ``hidden`` by
        default, which halves the stride-4 work of training)."""
        self.reference_proj = nn.Conv2d(Fc, hidden, 1)

    def reference_features(self, mask_features: torch.Tensor) -> torch.Tensor:
        """(R, hidden, h, w) per-pixel features a reference prompt is pooled from (mask features, widened)."""
        return self.reference_proj(mask_features)

    def _position_code(self, h: int, w: int, ref: torch.Tensor) -> torch.Tensor:
        """(1, mask_channels, h, w) learned separable position code: row term + column term of 1D sine codes."""
        y = _sine_1d(h, self.pos_dim, ref)
        x = _sine_1d(w, self.pos_dim, ref)
        return (self.mask_pos_y(y).T[:, :, None] + self.mask_pos_x(x).T[:, None, :])[None]

    def forward(self, maps: list[torch.Tensor], images: torch.Tensor) -> ImageFeatures:
        """``maps`` fine to coarse from the vision encoder; ``images`` the [0, 1] encoder input (B, 3, H, W)."""
        if len(maps) != len(self.lateral):
            raise ValueError(f"FPN built for {len(self.lateral)} levels, got {len(maps)} maps")
        # ConvNeXt hands out channels-last strided maps; mixed layouts make CPU group norm / adds several
        # times slower, so the decoder works on contiguous (NCHW) tensors
        maps = [m.contiguous() for m in maps]
        outs: list[torch.Tensor] = [None] * len(maps)  # type: ignore[list-item]
        p = None
        for i in range(len(maps) - 1, -1, -1):
            y = self.lateral[i](maps[i])
            if p is not None:
                y = y + F.interpolate(p, size=y.shape[-2:], mode="nearest")
            p = self.smooth[i](y)
            outs[i] = p
        k = self.memory_level
        mem = self.memory_out(self.memory_fpn(outs[k]) + self.memory_backbone(maps[k]))
        H, W = images.shape[-2:]
        hw = (H // self.mask_stride, W // self.mask_stride)
        fine = outs[0]
        if fine.shape[-2:] != hw:
            fine = F.interpolate(fine, size=hw, mode="bilinear", align_corners=False)
        mask_features = fine + self._position_code(hw[0], hw[1], fine)
        B, C, h, w = mem.shape
        # the same features averaged per memory cell
        if hw[0] % h == 0 and hw[1] % w == 0:
            attention = F.avg_pool2d(mask_features, (hw[0] // h, hw[1] // w))
        else:
            attention = F.adaptive_avg_pool2d(mask_features, (h, w))
        pos = sine_positions(h, w, C, device=mem.device, dtype=mem.dtype)
        return ImageFeatures(memory=mem.flatten(2).transpose(1, 2), memory_hw=(h, w), memory_pos=pos,
                             mask_features=mask_features, attention_features=attention)
