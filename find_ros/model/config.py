"""Configuration dataclasses of the FIND model (JSON round trip with ``to_dict``/``from_dict``)."""
from __future__ import annotations

import dataclasses
from typing import Any

__all__ = [
    "ConfigError",
    "VisionEncoderConfig",
    "LanguageEncoderConfig",
    "InterfaceConfig",
    "FindConfig",
    "VISION_KINDS",
    "LANGUAGE_KINDS",
]

VISION_KINDS = ("clip", "siglip", "sam", "tiny-clip", "convnext", "resnet")
LANGUAGE_KINDS = ("clip", "siglip", "llm", "tiny-clip")


class ConfigError(ValueError):
    """A configuration value out of range; the message names the field and the value."""


def _tuple_int(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in v)


@dataclasses.dataclass
class VisionEncoderConfig:
    """Which vision foundation model gives the image features, and how it is fed."""

    kind: str = "tiny-clip"
    """``clip`` / ``siglip`` (ViT towers), ``sam`` (SAM image encoder), ``tiny-clip`` (a small CLIP
    vision tower built from ``hf_config``, trained with the interface), or a hierarchical convolutional
    backbone ``convnext`` / ``resnet`` (transformers ``ConvNextModel`` / ``ResNetModel``: maps at strides
    4-32 fused top-down by the FPN pixel decoder)."""
    path: str | None = None
    """Directory (or hub id where a hub is reachable) for ``from_pretrained``; ``None`` builds from ``hf_config``."""
    feature_layers: tuple[int, ...] = (2, 4)
    """Indices into the encoder's ``hidden_states`` (0 = patch embeddings / stem output) fused by the pixel
    decoder; for ``convnext`` / ``resnet`` ``(1, 2, 3, 4)`` are the four stages at strides 4, 8, 16, 32."""
    image_size: tuple[int, int] = (96, 128)
    """(h, w) the input frame is resized to before the encoder (square for ``sam``)."""
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    """Per-channel mean subtracted from [0, 1] RGB (CLIP's)."""
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    """Per-channel std dividing [0, 1] RGB (CLIP's)."""
    hf_config: dict | None = None
    """The transformers config (``to_dict()``) used to rebuild the encoder without downloading weights;
    filled in when a model is built or loaded."""
    reference_size: int = 0
    """Side of the square a reference crop is resized to before encoding (hierarchical kinds only: a conv
    backbone takes any size, so a 64-pixel crop need not be blown up to the frame size); 0 = ``image_size``."""

    def __post_init__(self) -> None:
        if self.reference_size < 0:
            raise ConfigError(f"vision reference_size must be >= 0, got {self.reference_size}")
        if self.kind not in VISION_KINDS:
            raise ConfigError(f"vision kind {self.kind!r} not in {VISION_KINDS}")
        self.feature_layers = _tuple_int(self.feature_layers)
        self.image_size = _tuple_int(self.image_size)
        self.image_mean = tuple(float(x) for x in self.image_mean)
        self.image_std = tuple(float(x) for x in self.image_std)
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ConfigError(f"vision image_size must be (h, w) >= 8, got {self.image_size}")
        if not self.feature_layers:
            raise ConfigError("vision feature_layers is empty")


@dataclasses.dataclass
class LanguageEncoderConfig:
    """Which language foundation model gives the token embeddings."""

    kind: str = "tiny-clip"
    """``clip`` / ``siglip`` (text towers), ``llm`` (any ``AutoModel`` decoder, e.g. Llama) or ``tiny-clip``."""
    path: str | None = None
    """Directory (model + tokenizer files) for ``from_pretrained``; ``None`` builds from ``hf_config``."""
    hidden_layer: int = -1
    """Index into ``hidden_states`` taken as token embeddings (-12 for LLMs as in the paper, -1 for CLIP text)."""
    max_tokens: int = 24
    """Most tokens per entity phrase (longer phrases are truncated, keeping the start)."""
    hf_config: dict | None = None
    """The transformers config (``to_dict()``) used to rebuild the encoder; filled in automatically."""

    def __post_init__(self) -> None:
        if self.kind not in LANGUAGE_KINDS:
            raise ConfigError(f"language kind {self.kind!r} not in {LANGUAGE_KINDS}")
        if self.max_tokens < 3:
            raise ConfigError(f"language max_tokens must be >= 3, got {self.max_tokens}")


@dataclasses.dataclass
class InterfaceConfig:
    """The FIND interface (sampler + transformer + heads)."""

    hidden: int = 512
    """Width of queries, prompts and pixel features inside the interface."""
    layers: int = 9
    """Interface layers (masked cross-attention + conditional self-attention + FFN each)."""
    heads: int = 8
    """Attention heads (``hidden`` must be divisible by it)."""
    ffn: int = 2048
    """FFN inner width."""
    num_object_queries: int = 100
    """Learnable object queries (the paper uses 100 object + 1 image query)."""
    num_entity_queries: int = 16
    """Size of the learnable pool entity (grounding) queries are drawn from; entity k uses pool[k % size]."""
    mask_stride: int = 4
    """Stride of predicted masks and pixel embeddings relative to the encoder input."""
    sem_dim: int = 512
    """Dimension of the semantic space (entity, object, image and pixel embeddings)."""
    dropout: float = 0.0
    """Dropout in attention and FFN (training only)."""
    stem_channels: int = 32
    """Channels of the small strided conv stem on raw pixels that sharpens stride-``mask_stride`` features
    (ViT / SAM encoders only; a hierarchical backbone has its own stride-4 stage)."""
    fpn_channels: int = 64
    """Width of the FPN top-down path (hierarchical encoders only)."""
    memory_stride: int = 16
    """Stride of the FPN level the queries cross-attend to (hierarchical encoders only; the nearest level is
    used). ViT / SAM encoders use their patch grid."""

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "heads", "ffn", "num_object_queries", "num_entity_queries", "sem_dim",
                     "stem_channels", "fpn_channels", "memory_stride"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"interface {name} must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ConfigError(f"interface hidden {self.hidden} not divisible by heads {self.heads}")
        if self.mask_stride not in (1, 2, 4, 8):
            raise ConfigError(f"interface mask_stride must be 1, 2, 4 or 8, got {self.mask_stride}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"interface dropout must be in [0, 1), got {self.dropout}")


@dataclasses.dataclass
class FindConfig:
    """The whole model: encoders + interface."""

    vision: VisionEncoderConfig = dataclasses.field(default_factory=VisionEncoderConfig)
    """Vision foundation model."""
    language: LanguageEncoderConfig = dataclasses.field(default_factory=LanguageEncoderConfig)
    """Language foundation model."""
    interface: InterfaceConfig = dataclasses.field(default_factory=InterfaceConfig)
    """FIND interface."""
    freeze_encoders: bool = True
    """Freeze both encoders (paper); the tiny default trains them since no pretrained weights exist here.
    Frozen encoders loaded from ``path`` are not written by ``save_pretrained`` (reloaded from ``path``)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FindConfig":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown FindConfig keys {sorted(unknown)}")

        def sub(klass, v):
            if isinstance(v, klass):
                return v
            v = dict(v or {})
            bad = set(v) - {f.name for f in dataclasses.fields(klass)}
            if bad:
                raise ConfigError(f"unknown {klass.__name__} keys {sorted(bad)}")
            return klass(**v)

        return cls(
            vision=sub(VisionEncoderConfig, d.get("vision")),
            language=sub(LanguageEncoderConfig, d.get("language")),
            interface=sub(InterfaceConfig, d.get("interface")),
            freeze_encoders=bool(d.get("freeze_encoders", True)),
        )
