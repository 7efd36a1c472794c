"""Foundation-model encoders through ``transformers``: vision feature maps and language token embeddings.

Any compatible model loads with ``from_pretrained(path)``: CLIP / SigLIP vision towers and SAM's image
encoder (one stride: the patch), or a hierarchical convolutional backbone (ConvNeXt, ResNet: feature maps
at strides 4 / 8 / 16 / 32, :data:`HIERARCHICAL_KINDS`) for vision; CLIP / SigLIP text towers and decoder
LLMs (``AutoModel``, hidden layer chosen) for language. Without a path the encoder is rebuilt from the
transformers config stored in our config, so a tiny random backbone and a real pretrained one go through
the same code.
"""
from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F

from find_ros.model.config import LanguageEncoderConfig, VisionEncoderConfig

__all__ = ["EncoderError", "VisionEncoder", "LanguageEncoder", "load_tokenizer", "HIERARCHICAL_KINDS"]

HIERARCHICAL_KINDS = ("convnext", "resnet")
"""Vision kinds whose ``hidden_states`` are (B, C, h, w) maps at growing strides (index 0 = stem output)."""

log = logging.getLogger(__name__)


class EncoderError(RuntimeError):
    """An encoder that cannot be built or fed; the message names the offending value."""


def _vision_classes(kind: str):
    import transformers as T

    if kind in ("clip", "tiny-clip"):
        return T.CLIPVisionModel, T.CLIPVisionConfig
    if kind == "siglip":
        return T.SiglipVisionModel, T.SiglipVisionConfig
    if kind == "sam":
        return T.SamVisionModel, T.SamVisionConfig
    if kind == "convnext":
        return T.ConvNextModel, T.ConvNextConfig
    if kind == "resnet":
        return T.ResNetModel, T.ResNetConfig
    raise EncoderError(f"unknown vision kind {kind!r}")


def _language_classes(kind: str):
    import transformers as T

    if kind in ("clip", "tiny-clip"):
        return T.CLIPTextModel, T.CLIPTextConfig
    if kind == "siglip":
        return T.SiglipTextModel, T.SiglipTextConfig
    if kind == "llm":
        return T.AutoModel, None
    raise EncoderError(f"unknown language kind {kind!r}")


def _hf_config_dict(cfg) -> dict:
    import json

    d = cfg.to_dict()
    d.pop("transformers_version", None)
    d.pop("_name_or_path", None)
    return json.loads(json.dumps(d, default=str))  # JSON-normal form (str keys), as it is saved


def _build_from_dict(model_cls, config_cls, d: dict, *, attention: bool = True) -> nn.Module:
    """The model of a stored transformers config; ``attention=False`` for convolutional models (no sdpa)."""
    import transformers as T

    d = dict(d)
    if config_cls is None:
        model_type = d.pop("model_type")
        cfg = T.AutoConfig.for_model(model_type, **d)
        return T.AutoModel.from_config(cfg, attn_implementation="sdpa")
    cfg = config_cls.from_dict(d)
    if attention:
        cfg._attn_implementation = "sdpa"
    return model_cls(cfg)


@torch.no_grad()
def _probe_levels(model: nn.Module, layers: tuple[int, ...], side: int = 128) -> tuple[list[int], list[int]]:
    """(channels, strides) of ``hidden_states[i]`` for ``i`` in ``layers`` of a hierarchical backbone, from one
    forward of a ``side`` x ``side`` zero image in eval mode (batch-norm statistics are left untouched)."""
    was = model.training
    model.eval()
    try:
        p = next(model.parameters())
        n_ch = int(getattr(model.config, "num_channels", 3))
        out = model(pixel_values=torch.zeros(1, n_ch, side, side, device=p.device, dtype=p.dtype),
                    output_hidden_states=True)
    finally:
        model.train(was)
    hs = out.hidden_states
    chans, strides = [], []
    for i in layers:
        if not -len(hs) <= i < len(hs):
            raise EncoderError(f"vision feature layer {i} outside hidden_states[0..{len(hs) - 1}]")
        m = hs[i]
        if m.ndim != 4:
            raise EncoderError(f"hidden_states[{i}] of {type(model).__name__} is {tuple(m.shape)}, not (B, C, h, w)")
        chans.append(int(m.shape[1]))
        strides.append(int(round(side / m.shape[-1])))
    return chans, strides


class VisionEncoder(nn.Module):
    """Images (B, 3, H, W) in [0, 1] -> list of feature maps (B, C_i, h_i, w_i), one per ``feature_layers``.

    ``level_channels`` / ``level_strides`` give C_i and the stride of each map relative to the encoder
    input; ``hierarchical`` is True for the convolutional kinds (maps at several strides, fed to the FPN
    pixel decoder), False for ViT / SAM kinds (every map at the patch stride)."""

    def __init__(self, *, config: VisionEncoderConfig, model: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.hierarchical = config.kind in HIERARCHICAL_KINDS
        model_cls, config_cls = _vision_classes(config.kind)
        attn = {} if self.hierarchical else {"attn_implementation": "sdpa"}
        if model is None:
            if config.path is not None:
                model = model_cls.from_pretrained(config.path, **attn)
            elif config.hf_config is not None:
                model = _build_from_dict(model_cls, config_cls, config.hf_config, attention=not self.hierarchical)
            else:
                raise EncoderError(f"vision encoder {config.kind!r} needs a path or hf_config")
        self.model = model
        hf = model.config
        config.hf_config = _hf_config_dict(hf)
        self.register_buffer("mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)
        if self.hierarchical:
            self.level_channels, self.level_strides = _probe_levels(model, config.feature_layers)
            self.patch = min(self.level_strides)
            self.channels = self.level_channels[-1]
            h, w = config.image_size
            if h % self.patch or w % self.patch:
                raise EncoderError(f"vision image_size {config.image_size} not a multiple of the finest feature "
                                   f"stride {self.patch}")
            return
        self.patch = int(hf.patch_size if not isinstance(hf.patch_size, (list, tuple)) else hf.patch_size[0])
        n_hidden = int(hf.num_hidden_layers)
        for i in config.feature_layers:
            if not -(n_hidden + 1) <= i <= n_hidden:
                raise EncoderError(f"vision feature layer {i} outside hidden_states[0..{n_hidden}]")
        h, w = config.image_size
        if config.kind == "sam":
            side = int(hf.image_size)
            if (h, w) != (side, side):
                raise EncoderError(f"SAM encoder needs image_size ({side}, {side}), config has {config.image_size}")
        if h % self.patch or w % self.patch:
            raise EncoderError(f"vision image_size {config.image_size} not a multiple of patch {self.patch}")
        self.channels = int(hf.hidden_size)
        self.level_channels = [self.channels] * len(config.feature_layers)
        self.level_strides = [self.patch] * len(config.feature_layers)

    @property
    def stride(self) -> int:
        """The finest stride of the feature maps (the patch size for ViT kinds)."""
        return self.patch

    def forward(self, images: torch.Tensor, *, size: tuple[int, int] | None = None) -> list[torch.Tensor]:
        """Feature maps of ``images`` resized to ``size`` (hierarchical kinds only; default ``image_size``)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise EncoderError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if size is not None and not self.hierarchical and tuple(size) != tuple(self.config.image_size):
            raise EncoderError(f"a {self.config.kind!r} encoder takes only its image_size {self.config.image_size}")
        h, w = self.config.image_size if size is None else (int(size[0]), int(size[1]))
        x = images.to(self.mean.dtype)
        if tuple(x.shape[-2:]) != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        if self.hierarchical:
            out = self.model(pixel_values=x, output_hidden_states=True)
            return [out.hidden_states[i] for i in self.config.feature_layers]
        kw = {} if self.config.kind == "sam" else {"interpolate_pos_encoding": True}
        out = self.model(pixel_values=x, output_hidden_states=True, **kw)
        gh, gw = h // self.patch, w // self.patch
        maps = []
        for i in self.config.feature_layers:
            hs = out.hidden_states[i]
            if hs.ndim == 4:  # SAM: (B, h, w, C)
                maps.append(hs.permute(0, 3, 1, 2).contiguous())
                continue
            hs = hs[:, hs.shape[1] - gh * gw:]  # drop CLS / prefix tokens
            maps.append(hs.transpose(1, 2).reshape(hs.shape[0], hs.shape[2], gh, gw))
        return maps


def load_tokenizer(path):
    """``AutoTokenizer.from_pretrained(path)`` (any tokenizer saved with ``save_pretrained``)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


class LanguageEncoder(nn.Module):
    """Token ids (N, L) + attention (N, L) -> token embeddings (N, L, C) from ``hidden_states[hidden_layer]``."""

    def __init__(self, *, config: LanguageEncoderConfig, model: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        model_cls, config_cls = _language_classes(config.kind)
        if model is None:
            if config.path is not None:
                model = model_cls.from_pretrained(config.path, attn_implementation="sdpa")
            elif config.hf_config is not None:
                model = _build_from_dict(model_cls, config_cls, config.hf_config)
            else:
                raise EncoderError(f"language encoder {config.kind!r} needs a path or hf_config")
        if config.kind == "llm" and hasattr(model, "get_decoder") and not hasattr(model, "embed_tokens"):
            # a *ForCausalLM passed in: keep the base model (hidden states, no LM head)
            base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
            if isinstance(base, nn.Module):
                model = base
        self.model = model
        hf = model.config
        config.hf_config = _hf_config_dict(hf)
        n_hidden = int(hf.num_hidden_layers)
        if not -(n_hidden + 1) <= config.hidden_layer <= n_hidden:
            raise EncoderError(f"language hidden_layer {config.hidden_layer} outside hidden_states[0..{n_hidden}]")
        self.channels = int(hf.hidden_size)
        self.max_positions = int(getattr(hf, "max_position_embeddings", 10**6))

    def forward(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > self.max_positions:
            raise EncoderError(f"{ids.shape[1]} tokens exceed the language model's {self.max_positions} positions")
        out = self.model(input_ids=ids, attention_mask=attention.long(), output_hidden_states=True)
        return out.hidden_states[self.config.hidden_layer]
