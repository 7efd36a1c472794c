"""Building and storing a FindModel: the default tiny config and the checkpoint files (``FindModel`` delegates here)."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch

from find_ros.model.config import FindConfig, InterfaceConfig, LanguageEncoderConfig, VisionEncoderConfig
from find_ros.model.encoders import load_tokenizer

__all__ = ["FindModelError", "tiny_config", "TINY_CONVNEXT", "TINY_RESNET", "skipped_prefixes", "save_model",
           "load_model", "CONFIG_FILE", "WEIGHTS_FILE", "TOKENIZER_DIR"]

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
_FORMAT = "find_ros.FindModel"


class FindModelError(RuntimeError):
    """A model that cannot be built, loaded or fed; the message names the offending value."""


TINY_CONVNEXT = dict(hidden_sizes=[24, 48, 96, 192], depths=[1, 1, 2, 1], patch_size=4, num_channels=3,
                     layer_scale_init_value=1.0)
"""The default tiny ConvNeXt (``vision_kind="convnext"``): four stages at strides 4 / 8 / 16 / 32. Layer scale
starts at 1 (transformers' 1e-6 keeps the residual blocks of a from-scratch backbone nearly off for the first
hundreds of steps, which is all a short CPU run has)."""
TINY_RESNET = dict(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="basic",
                   num_channels=3)
"""The default tiny ResNet (``vision_kind="resnet"``)."""


def _tiny_vision(*, vision_kind: str, h: int, w: int, vision: dict | None):
    """The transformers config of the tiny vision tower and the feature layers the pixel decoder reads."""
    from transformers import CLIPVisionConfig, ConvNextConfig, ResNetConfig

    if vision_kind == "tiny-clip":
        v = dict(hidden_size=96, num_hidden_layers=4, num_attention_heads=4, intermediate_size=384,
                 image_size=max(h, w), patch_size=8, hidden_act="gelu")
        v.update(vision or {})
        vcfg = CLIPVisionConfig(**v)
        n = vcfg.num_hidden_layers
        return vcfg, (max(1, n // 2), n)
    if vision_kind in ("convnext", "resnet"):
        v = dict(TINY_CONVNEXT if vision_kind == "convnext" else TINY_RESNET)
        v.update(vision or {})
        vcfg = (ConvNextConfig if vision_kind == "convnext" else ResNetConfig)(**v)
        return vcfg, tuple(range(1, len(vcfg.hidden_sizes) + 1))
    raise FindModelError(f"tiny vision_kind must be tiny-clip, convnext or resnet, got {vision_kind!r}")


def tiny_config(*, vocab_size: int, image_size: tuple[int, int] = (96, 128), vision: dict | None = None,
                text: dict | None = None, interface: dict | None = None, vision_kind: str = "tiny-clip",
                reference_size: int = 96) -> FindConfig:
    """The default tiny model (see MODEL_CARD): CLIP-style ViT (patch 8, hidden 96, 4 layers) and text tower
    (hidden 96, 2 layers) over a word vocabulary; interface hidden 128, 3 layers, 4 heads, 24 object queries,
    masks at stride 4, 64-d semantic space. ``vision``/``text``/``interface`` override fields.

    ``vision_kind="convnext"`` (or ``"resnet"``) swaps the ViT for a small hierarchical backbone
    (:data:`TINY_CONVNEXT` / :data:`TINY_RESNET`, ``vision`` overrides its transformers config fields) whose four
    stages feed the FPN pixel decoder; reference crops are encoded at ``reference_size`` squared."""
    from transformers import CLIPTextConfig

    h, w = (int(image_size[0]), int(image_size[1]))
    vcfg, layers = _tiny_vision(vision_kind=vision_kind, h=h, w=w, vision=vision)
    t = dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=384,
             max_position_embeddings=32, vocab_size=vocab_size, hidden_act="gelu",
             pad_token_id=0, bos_token_id=2, eos_token_id=3)
    t.update(text or {})
    itf = dict(hidden=128, layers=3, heads=4, ffn=512, num_object_queries=24, num_entity_queries=8,
               mask_stride=4, sem_dim=64, dropout=0.0, stem_channels=32)
    itf.update(interface or {})
    tcfg = CLIPTextConfig(**t)
    return FindConfig(
        vision=VisionEncoderConfig(kind=vision_kind, path=None, feature_layers=layers,
                                   image_size=(h, w), hf_config=_clean(vcfg.to_dict()),
                                   reference_size=0 if vision_kind == "tiny-clip" else int(reference_size)),
        language=LanguageEncoderConfig(kind="tiny-clip", path=None, hidden_layer=-1,
                                       max_tokens=min(24, tcfg.max_position_embeddings),
                                       hf_config=_clean(tcfg.to_dict())),
        interface=InterfaceConfig(**itf),
        freeze_encoders=False,
    )


def _clean(d: dict) -> dict:
    d = dict(d)
    d.pop("transformers_version", None)
    d.pop("_name_or_path", None)
    return json.loads(json.dumps(d, default=str))


# ----------------------------------------------------------------------------- checkpoint files


def skipped_prefixes(config: FindConfig) -> tuple[str, ...]:
    """State-dict prefixes a checkpoint leaves out: frozen encoders that load from their own path."""
    skip = []
    if config.freeze_encoders and config.vision.path is not None:
        skip.append("vision.")
    if config.freeze_encoders and config.language.path is not None:
        skip.append("language.")
    return tuple(skip)


def save_model(model, path: str | Path) -> None:
    """Write ``config.json``, ``model.safetensors`` and ``tokenizer/`` of ``model`` into ``path`` (created)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    skip = skipped_prefixes(model.config)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()
             if not k.startswith(skip)}
    save_file(state, str(path / WEIGHTS_FILE), metadata={"format": _FORMAT})
    meta = {"format": _FORMAT, "version": 1, "config": model.config.to_dict()}
    (path / CONFIG_FILE).write_text(json.dumps(meta, indent=1))
    model.tokenizer.save_pretrained(str(path / TOKENIZER_DIR))


def _read_config(path: Path) -> FindConfig:
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise FindModelError(f"no {CONFIG_FILE} in {path}")
    meta = json.loads(cfg_file.read_text())
    if meta.get("format") != _FORMAT:
        raise FindModelError(f"{cfg_file} is not a FindModel config (format {meta.get('format')!r})")
    return FindConfig.from_dict(meta["config"])


def load_model(cls, path: str | Path, *, device: str | torch.device, dtype: torch.dtype):
    """A ``cls`` (FindModel) loaded from files written by :func:`save_model`; eval mode, on ``device`` in ``dtype``."""
    from safetensors.torch import load_file

    path = Path(path)
    config = _read_config(path)
    state = load_file(str(path / WEIGHTS_FILE))
    paths = {}
    for name in ("vision", "language"):
        sub = getattr(config, name)
        if sub.path is not None and any(k.startswith(name + ".") for k in state):
            paths[name] = sub.path  # weights are in the checkpoint: build from hf_config, not the path
            setattr(config, name, dataclasses.replace(sub, path=None))
    tok = load_tokenizer(path / TOKENIZER_DIR)
    model = cls(config=config, tokenizer=tok)
    for name, p in paths.items():
        getattr(model.config, name).path = p
    missing, unexpected = model.load_state_dict(state, strict=False)
    skip = skipped_prefixes(model.config)
    missing = [k for k in missing if not k.startswith(skip)]
    if missing or unexpected:
        raise FindModelError(f"checkpoint {path} does not match its config: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    model.to(device=device, dtype=dtype)
    model.eval()
    return model
