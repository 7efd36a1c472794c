"""FindModel: encoders + pixel decoder + embedding sampler + FIND interface + heads, one set of weights for all tasks."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from find_ros.instruction import Entity, Instruction, Reference
from find_ros.model.config import FindConfig
from find_ros.model.encoders import LanguageEncoder, VisionEncoder, load_tokenizer
from find_ros.model.find_build import (CONFIG_FILE, TINY_CONVNEXT, TINY_RESNET, TOKENIZER_DIR,  # noqa: F401
                                       WEIGHTS_FILE, FindModelError, load_model, save_model, skipped_prefixes,
                                       tiny_config)
from find_ros.model.heads import FindHeads, FindOutput
from find_ros.model.interface import ATTENTION_TABLE, TASKS, FindInterface, InterfaceError
from find_ros.model.pixel_decoder import FpnPixelDecoder, ImageFeatures, PixelDecoder
from find_ros.model.sampler import EmbeddingSampler, PromptBatch
from find_ros.model.tokenizer import build_word_tokenizer, tokenize_entities

__all__ = ["FindModel", "FindModelError", "FindOutput", "ImageFeatures", "PromptBatch", "TASKS", "ATTENTION_TABLE",
           "tiny_config", "TINY_CONVNEXT", "TINY_RESNET"]

log = logging.getLogger(__name__)


class FindModel(nn.Module):
    """FIND (Zou et al., NeurIPS 2024) over any transformers vision/language pair."""

    def __init__(self, *, config: FindConfig, vision: nn.Module | None = None, language: nn.Module | None = None,
                 tokenizer=None) -> None:
        super().__init__()
        self.config = config
        self.vision = VisionEncoder(config=config.vision, model=vision)
        self.language = LanguageEncoder(config=config.language, model=language)
        if tokenizer is None:
            if config.language.path is None:
                raise FindModelError("no tokenizer given and language.path is None (nothing to load it from)")
            tokenizer = load_tokenizer(config.language.path)
        self.tokenizer = tokenizer
        ic = config.interface
        h, w = config.vision.image_size
        if h % ic.mask_stride or w % ic.mask_stride:
            raise FindModelError(f"vision image_size {config.vision.image_size} not a multiple of the mask stride "
                                 f"{ic.mask_stride}")
        r = int(config.vision.reference_size)
        if r and self.vision.hierarchical and (r % ic.mask_stride or r % self.vision.stride):
            raise FindModelError(f"vision reference_size {r} not a multiple of the mask stride {ic.mask_stride} and "
                                 f"the finest feature stride {self.vision.stride}")
        if self.vision.hierarchical:
            order = sorted(range(len(self.vision.level_strides)), key=lambda i: self.vision.level_strides[i])
            if order != list(range(len(order))):
                raise FindModelError(f"vision feature_layers {config.vision.feature_layers} must go fine to coarse "
                                     f"(strides {self.vision.level_strides})")
            self.decoder = FpnPixelDecoder(in_channels=self.vision.level_channels, strides=self.vision.level_strides,
                                           hidden=ic.hidden, fpn_channels=ic.fpn_channels,
                                           mask_stride=ic.mask_stride, memory_stride=ic.memory_stride)
        else:
            self.decoder = PixelDecoder(in_channels=self.vision.channels,
                                        num_levels=len(config.vision.feature_layers), hidden=ic.hidden,
                                        mask_stride=ic.mask_stride, stem_channels=ic.stem_channels)
        self.sampler = EmbeddingSampler(language_channels=self.language.channels, hidden=ic.hidden,
                                        sem_dim=ic.sem_dim)
        self.interface = FindInterface(config=ic)
        self.heads = FindHeads(hidden=ic.hidden, sem_dim=ic.sem_dim, mask_channels=self.decoder.mask_channels)
        if config.freeze_encoders:
            for enc in (self.vision, self.language):
                enc.requires_grad_(False)
                enc.eval()

    # ------------------------------------------------------------------ construction

    @classmethod
    def build_tiny(cls, *, vocab: list[str], image_size: tuple[int, int] = (96, 128), seed: int = 0,
                   vision: dict | None = None, text: dict | None = None, interface: dict | None = None,
                   vision_kind: str = "tiny-clip", reference_size: int = 96) -> "FindModel":
        """The default tiny model with random weights (deterministic by ``seed``) and a word-level tokenizer;
        ``vision_kind`` as in :func:`tiny_config`."""
        tok = build_word_tokenizer(list(vocab))
        cfg = tiny_config(vocab_size=len(tok), image_size=image_size, vision=vision, text=text, interface=interface,
                          vision_kind=vision_kind, reference_size=reference_size)
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(int(seed))
            return cls(config=cfg, tokenizer=tok)
        finally:
            torch.random.set_rng_state(state)

    @property
    def device(self) -> torch.device:
        return self.heads.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        return self.heads.logit_scale.dtype

    def train(self, mode: bool = True) -> "FindModel":
        super().train(mode)
        if self.config.freeze_encoders:
            self.vision.eval()
            self.language.eval()
        return self

    # ------------------------------------------------------------------ encoders

    def _encoder_input(self, images: torch.Tensor, size: tuple[int, int] | None) -> tuple[torch.Tensor, tuple]:
        if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
            raise FindModelError(f"images must be a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
        if not images.is_floating_point():
            raise FindModelError(f"images must be float in [0, 1], got {images.dtype}")
        x = images.to(device=self.device, dtype=self.dtype)
        size = tuple(self.config.vision.image_size) if size is None else (int(size[0]), int(size[1]))
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return x, size

    def _vision(self, x: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
        kw = {"size": size} if self.vision.hierarchical else {}
        if self.config.freeze_encoders:
            with torch.no_grad():
                return self.vision(x, **kw)
        return self.vision(x, **kw)

    @torch.no_grad()
    def vision_maps(self, images: torch.Tensor, *, size: tuple[int, int] | None = None) -> list[torch.Tensor]:
        """The vision encoder's feature maps of ``images`` (what a frozen-encoder feature cache stores)."""
        x, size = self._encoder_input(images, size)
        return self.vision(x, **({"size": size} if self.vision.hierarchical else {}))

    def encode_image(self, images: torch.Tensor, *, size: tuple[int, int] | None = None,
                     maps: list[torch.Tensor] | None = None) -> ImageFeatures:
        """(B, 3, H, W) float RGB in [0, 1] (resized to ``config.vision.image_size``, or to ``size`` for a
        hierarchical encoder) -> image features. ``maps``: the encoder's output for these images, precomputed
        (:meth:`vision_maps`, a feature cache); only the pixel decoder then runs."""
        x, size = self._encoder_input(images, size)
        if maps is None:
            maps = self._vision(x, size)
        else:
            maps = [m.to(device=self.device, dtype=self.dtype) for m in maps]
        return self.decoder(maps, x)

    def set_frozen_encoders(self, frozen: bool = True) -> "FindModel":
        """Freeze (or unfreeze) both encoders: ``config.freeze_encoders``, ``requires_grad`` and eval mode."""
        self.config.freeze_encoders = bool(frozen)
        for enc in (self.vision, self.language):
            enc.requires_grad_(not frozen)
        self.train(self.training)
        return self

    def reference_size(self) -> tuple[int, int]:
        """(h, w) reference crops are encoded at: ``vision.reference_size`` squared for hierarchical encoders
        (when set), else the image size."""
        r = int(self.config.vision.reference_size)
        if r and self.vision.hierarchical:
            return (r, r)
        return tuple(self.config.vision.image_size)

    def _language(self, ids: np.ndarray, att: np.ndarray) -> torch.Tensor:
        i = torch.from_numpy(ids).to(self.device)
        a = torch.from_numpy(att).to(self.device)
        if self.config.freeze_encoders:
            with torch.no_grad():
                return self.language(i, a).to(self.dtype)
        return self.language(i, a).to(self.dtype)

    def reference_inputs(self, references: list[Reference]) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Encoder input (R, 3, h, w) in [0, 1], mask weights (R, h/s, w/s) and (h, w) of reference crops."""
        import cv2

        h, w = self.reference_size()
        s = self.config.interface.mask_stride
        imgs, masks = [], []
        for r in references:
            imgs.append(cv2.resize(r.image, (w, h), interpolation=cv2.INTER_AREA))
            m = np.ones(r.image.shape[:2], np.float32) if r.mask is None else r.mask.astype(np.float32)
            mr = cv2.resize(m, (w // s, h // s), interpolation=cv2.INTER_AREA)
            if mr.max() <= 0:  # a mask thinner than a feature cell: keep its nearest cell
                mr = cv2.resize(m, (w // s, h // s), interpolation=cv2.INTER_LINEAR)
                mr = (mr >= mr.max()).astype(np.float32)
            masks.append(mr)
        x = torch.from_numpy(np.stack(imgs)).to(self.device).permute(0, 3, 1, 2).to(self.dtype) / 255.0
        mt = torch.from_numpy(np.stack(masks)).to(device=self.device, dtype=self.dtype)
        return x, mt, (h, w)

    @torch.no_grad()
    def reference_vision_maps(self, references: list[Reference]) -> list[torch.Tensor]:
        """The vision encoder's maps of reference crops (what a feature cache stores for them)."""
        x, _, size = self.reference_inputs(references)
        return self.vision_maps(x, size=size)

    def embed_references(self, references: list[Reference], *, maps: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(R, C) prompt embeddings of reference images (mask pooling + points sampled in the mask);
        ``maps``: their precomputed encoder maps (:meth:`reference_vision_maps`)."""
        x, mt, (h, w) = self.reference_inputs(references)
        feats = self.encode_image(x, size=(h, w) if self.vision.hierarchical else None, maps=maps)
        return self.sampler.pool_references(self.decoder.reference_features(feats.mask_features), mt)

    def encode_instructions(self, instructions: list[Instruction], *,
                            reference_maps: list[torch.Tensor] | None = None) -> PromptBatch:
        """Prompts of a batch of instructions: token embeddings per entity, ``<k>`` -> reference ``k`` embedding.
        ``reference_maps``: precomputed encoder maps of all the instructions' references, in order."""
        if not instructions:
            raise FindModelError("encode_instructions needs at least one instruction")
        phrases, refs, offsets = [], [], []
        for ins in instructions:
            if not isinstance(ins, Instruction):
                raise FindModelError(f"expected Instruction, got {type(ins).__name__}")
            phrases.append([e.phrase for e in ins.entities])
            offsets.append(len(refs))
            refs.extend(ins.references)
        tokens = tokenize_entities(self.tokenizer, phrases, max_tokens=self.config.language.max_tokens,
                                   add_eos=self.config.language.kind != "llm", ref_offsets=offsets)
        lang = self._language(tokens.ids, tokens.attention)
        ref_emb = self.embed_references(refs, maps=reference_maps) if refs else None
        return self.sampler(tokens=tokens, language=lang, references=ref_emb, batch=len(instructions))

    def encode_text(self, texts: list[str]) -> PromptBatch:
        """Prompts of plain texts, one entity each (captions, class names)."""
        import re

        ents = []
        for t in texts:
            t = " ".join(re.sub(r"<\d+>", " ", str(t)).split()) or "[UNK]"
            ents.append([t])
        tokens = tokenize_entities(self.tokenizer, ents, max_tokens=self.config.language.max_tokens,
                                   add_eos=self.config.language.kind != "llm")
        lang = self._language(tokens.ids, tokens.attention)
        return self.sampler(tokens=tokens, language=lang, references=None, batch=len(texts))

    def caption_embeddings(self, texts: list[str]) -> torch.Tensor:
        """(B, D) unit-norm caption embeddings for text -> image retrieval."""
        return self.encode_text(texts).sentence

    # ------------------------------------------------------------------ interface

    def forward(self, features: ImageFeatures, prompts: PromptBatch | None, *, task: str,
                pixel_sem: bool = True) -> FindOutput:
        """``pixel_sem=False``: no per-pixel embeddings (``FindOutput.pixel_sem`` None; ``heads.pixels`` of the
        mask features gives them, or a window of them, later)."""
        if task not in TASKS:
            raise InterfaceError(f"unknown task {task!r}; tasks are {TASKS}")
        B = features.batch
        if prompts is not None and prompts.batch != B:
            if prompts.batch == 1:
                prompts = prompts.expand(B)
            elif B == 1:
                features = features.expand(prompts.batch)
                B = prompts.batch
            else:
                raise FindModelError(f"image batch {B} and prompt batch {prompts.batch} differ")
        mf = features.mask_features
        out, lay, preds = self.interface(features, prompts, task=task,
                                         predict_masks=lambda q, f=mf: self.heads.masks(q, f))
        Q, E, nq = lay["Q"], lay["E"], lay["nq"]
        qo, iq, eq = out[:, :Q], out[:, Q], out[:, Q + 1:nq]
        masks = self.heads.masks(torch.cat([qo, eq], dim=1), mf)
        scale = self.heads.scale()
        object_sem = self.heads.semantic(qo)
        D = object_sem.shape[-1]
        class_logits = None
        if prompts is not None:
            Ep = E if E else prompts.max_entities
            ent_sem = self.heads.semantic(self.interface.entity_means(prompts, out[:, nq:], Ep))
        else:
            ent_sem = out.new_zeros(B, 0, D)
        if E:
            eq_sem = self.heads.semantic(eq)
            entity_sem = ent_sem
            score = scale * (entity_sem * eq_sem).sum(-1) + self.heads.score_bias
        else:
            if prompts is not None and task == "segment":
                class_logits = scale * torch.einsum("bqd,bed->bqe", object_sem, ent_sem)
            eq_sem = out.new_zeros(B, 0, D)
            entity_sem = out.new_zeros(B, 0, D)
            score = out.new_zeros(B, 0)
        return FindOutput(
            object_masks=masks[:, :Q], object_logits=self.heads.objectness(qo).squeeze(-1), object_sem=object_sem,
            entity_masks=masks[:, Q:], entity_score_logits=score, entity_sem=entity_sem, entity_query_sem=eq_sem,
            entity_valid=lay["entity_valid"], image_sem=self.heads.semantic(iq),
            pixel_sem=self.heads.pixels(mf) if pixel_sem else None, class_logits=class_logits, logit_scale=scale,
            aux_object_masks=[p[:, :Q] for p in preds], aux_entity_masks=[p[:, Q:] for p in preds],
        )

    # ------------------------------------------------------------------ checkpoint I/O

    def _skipped_prefixes(self) -> tuple[str, ...]:
        return skipped_prefixes(self.config)

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``config.json``, ``model.safetensors`` and ``tokenizer/`` into ``path`` (created).

        Frozen encoders that were loaded from a path are not written (they reload from that path)."""
        save_model(self, path)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "FindModel":
        """Load a model written by :meth:`save_pretrained`; eval mode, on ``device`` in ``dtype``."""
        return load_model(cls, path, device=device, dtype=dtype)


def _entity_instruction(text: str) -> Instruction:
    """An instruction with ``text`` as its single entity (no splitting on separators)."""
    t = " ".join(str(text).split())
    return Instruction(id="", text=t, references=(), entities=(Entity(phrase=t, text=t, reference_indices=()),))
