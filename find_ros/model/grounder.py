"""FindGrounder: the FIND model behind the pipeline's Grounder / QueryEmbedder protocols."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from find_ros.grounder import EntityResult, FrameGrounding, GrounderError, LazyPixelEmbeddings, mask_box
from find_ros.instruction import Instruction
from find_ros.model.find import FindModel, _entity_instruction
from find_ros.model.sampler import PromptBatch
from find_ros.model.tokenizer import known_words_summary, unknown_words

__all__ = ["FindGrounder", "DEFAULT_MODEL_DIR", "mask_from_logits"]

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR: Path = Path(__file__).resolve().parents[1] / "models" / "find-sim-tiny"
"""The shipped default checkpoint."""


def mask_from_logits(logits: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(mask, box): the (h, w) float32 mask ``logits`` upsampled bilinearly with half-pixel centres to ``size``
    (H, W) (= ``F.interpolate(align_corners=False)``; cv2 is ~8x faster) and thresholded at 0, and the mask's
    :func:`~find_ros.grounder.mask_box`.

    When H, W are multiples of h, w only the cells around the positive logits are upsampled, bit for bit the
    same: a bilinear value is a convex combination of its neighbour cells, so it is > 0 only next to a positive
    cell, and the one-cell ring of non-positive cells around their box gives the block's border pixels the values
    the whole image would (an object covers a few percent of the frame: ~10x less work)."""
    H, W = int(size[0]), int(size[1])
    h, w = logits.shape
    if H % h or W % w:
        mask = cv2.resize(logits, (W, H), interpolation=cv2.INTER_LINEAR) > 0
        return mask, mask_box(mask)
    mask = np.zeros((H, W), bool)
    x0, y0, x1, y1 = mask_box(logits > 0)
    if x1 == 0:
        return mask, (0, 0, 0, 0)
    sy, sx = H // h, W // w
    y0, y1, x0, x1 = max(y0 - 1, 0), min(y1 + 1, h), max(x0 - 1, 0), min(x1 + 1, w)
    block = cv2.resize(logits[y0:y1, x0:x1], ((x1 - x0) * sx, (y1 - y0) * sy), interpolation=cv2.INTER_LINEAR) > 0
    mask[y0 * sy:y1 * sy, x0 * sx:x1 * sx] = block
    bx0, by0, bx1, by1 = mask_box(block)
    box = (bx0 + x0 * sx, by0 + y0 * sy, bx1 + x0 * sx, by1 + y0 * sy) if bx1 else (0, 0, 0, 0)
    return mask, box


class FindGrounder:
    """Ground the cached instruction in each frame with a :class:`FindModel` (task ``interleaved``).

    Per frame: resize to the model input, encode the image, run the interface against the cached
    prompts, upsample the entity mask logits to the input resolution and threshold at 0.

    Words the model does not know: after the tokenizer's normalisation (case, punctuation, plurals,
    synonyms; see :mod:`find_ros.model.tokenizer`) the words of the instruction that are still outside the
    model's vocabulary are logged once per instruction as a warning (with what the model knows) and kept in
    :attr:`unknown_words`; the instruction is still grounded (with ``[UNK]`` at those words).
    """

    name = "find"

    def __init__(self, *, model: FindModel, device: str | torch.device = "cpu", task: str = "interleaved") -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.task = task
        self._instruction: Instruction | None = None
        self._prompts: PromptBatch | None = None
        self.embed_calls = 0
        """How many times an instruction was embedded (tests check the cache)."""
        self.unknown_words: tuple[str, ...] = ()
        """Words of the current instruction outside the model's vocabulary (lower-case, each once, in order);
        ``()`` when every word is known or no instruction is set."""
        self._warned: set[tuple[str, ...]] = set()
        self.last_timings: dict[str, float] = {}
        """Milliseconds of the last :meth:`ground`: ``model_prepare`` (resize, tensor), ``model_forward`` (the model
        itself, without its per-pixel embedding head: :meth:`forward_only` less that) and ``model_post`` (mask
        upsampling, scores)."""

    @property
    def embedding_dim(self) -> int:
        """D of :meth:`embed_instruction`'s and the pixel embeddings' semantic space (the model's ``sem_dim``)."""
        return int(self.model.config.interface.sem_dim)

    @classmethod
    def from_pretrained(cls, path: str | Path = DEFAULT_MODEL_DIR, *, device: str | torch.device = "cpu") -> "FindGrounder":
        return cls(model=FindModel.from_pretrained(path, device=device), device=device)

    # ------------------------------------------------------------------ instruction

    @torch.inference_mode()
    def _embed(self, instruction: Instruction) -> PromptBatch:
        self.embed_calls += 1
        return self.model.encode_instructions([instruction])

    def find_unknown_words(self, texts: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
        """Words of ``texts`` (``<k>`` placeholders ignored) the model's tokenizer does not know after
        normalisation; logs a warning naming them and what the model knows (once per distinct word set)."""
        if isinstance(texts, str):
            texts = [texts]
        unknown = unknown_words(self.model.tokenizer, list(texts))
        if unknown and unknown not in self._warned:
            if len(self._warned) < 256:
                self._warned.add(unknown)
            log.warning("find: the model does not know %s in %r (grounded as [UNK]); it knows: %s",
                        ", ".join(repr(w) for w in unknown), " / ".join(texts)[:200],
                        known_words_summary(self.model.tokenizer))
        return unknown

    def prepare_instruction(self, instruction: Instruction) -> PromptBatch:
        """The prompts of ``instruction`` (its embedding, the costly part of :meth:`set_instruction`), leaving the
        instruction in force alone: one thread may embed while another grounds frames with the model."""
        if not isinstance(instruction, Instruction):
            raise GrounderError(f"prepare_instruction needs an Instruction, got {type(instruction).__name__}")
        return self._embed(instruction)

    def set_instruction(self, instruction: Instruction, *, prepared: PromptBatch | None = None) -> None:
        """Make ``instruction`` the one grounded (embedded here, or ``prepared`` by :meth:`prepare_instruction`)."""
        if not isinstance(instruction, Instruction):
            raise GrounderError(f"set_instruction needs an Instruction, got {type(instruction).__name__}")
        if self._instruction is instruction and self._prompts is not None:
            return
        if prepared is not None and not isinstance(prepared, PromptBatch):
            raise GrounderError(f"prepared must come from prepare_instruction, got {type(prepared).__name__}")
        self._prompts = prepared if prepared is not None else self._embed(instruction)
        self._instruction = instruction
        self.unknown_words = self.find_unknown_words([e.text for e in instruction.entities])

    def clear_instruction(self) -> None:
        self._instruction = None
        self._prompts = None
        self.unknown_words = ()

    # ------------------------------------------------------------------ frames

    def _frame_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise GrounderError(f"frame must be an (H, W, 3) uint8 array, got "
                                f"{getattr(rgb, 'shape', type(rgb))} {getattr(rgb, 'dtype', '')}")
        h, w = self.model.config.vision.image_size
        small = rgb if rgb.shape[:2] == (h, w) else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(np.ascontiguousarray(small)).to(self.device)
        # one float copy into plain NCHW (a permuted view would stay channels-last: the forward costs ~3 % more on it),
        # scaled in place
        return x.permute(2, 0, 1)[None].to(self.model.dtype, memory_format=torch.contiguous_format).div_(255.0)

    def prepare(self, rgb: np.ndarray) -> torch.Tensor:
        """The model input of a frame: resized to the model's image size, (1, 3, h, w) in [0, 1]."""
        return self._frame_tensor(rgb)

    @torch.inference_mode()
    def warm_up(self, *, width: int = 640, height: int = 480, frames: bool = True) -> float:
        """Run every frame-path branch once on a blank ``width`` x ``height`` frame (the grounding task for an
        instruction with a reference and for text ones of one and two entities, without the pixel head as
        :meth:`ground` runs it; the head on a window of cells, as the pipeline asks for it; the segmentation
        proposals with the whole pixel head, as the feature field computes it), so the first camera frames after
        loading cost what the later ones do (the first calls pick kernels and
        allocate: about 3x a frame; in the node, the first frame of the first text instruction cost 43 ms against
        17 while the warm-up had only the reference one); ``frames=False``: only the instruction embeddings (for
        the thread that embeds instructions). The instruction in force is untouched. Returns the milliseconds."""
        from find_ros.instruction import Reference, parse_instruction

        t0 = time.perf_counter()
        blank = np.zeros((height, width, 3), np.uint8)
        prompts = [self.model.encode_instructions([ins]) for ins in (
            parse_instruction("the <0>", [Reference(image=blank[:64, :64])]), parse_instruction("the red cube"),
            parse_instruction("the red cube, the blue sphere"))]
        if not frames:
            return (time.perf_counter() - t0) * 1e3
        feats = self.model.encode_image(self.prepare(blank))
        for p in prompts:
            self.model(feats, p, task=self.task, pixel_sem=False)
        self._lazy_pixels(feats.mask_features).window(0, 2, 0, 2)
        self.model(feats, None, task="segment")
        return (time.perf_counter() - t0) * 1e3

    @torch.inference_mode()
    def forward_only(self, x: torch.Tensor, *, pixel_sem: bool = True):
        """The model alone on a prepared frame against the cached prompts (the benchmark's reference: every
        output); ``pixel_sem=False``: without the per-pixel embeddings (what :meth:`ground` runs), then
        ``(output, mask_features)``."""
        if self._prompts is None:
            raise GrounderError("no instruction set (call set_instruction first)")
        feats = self.model.encode_image(x)
        out = self.model(feats, self._prompts, task=self.task, pixel_sem=pixel_sem)
        return out if pixel_sem else (out, feats.mask_features)

    def _lazy_pixels(self, mask_features: torch.Tensor) -> LazyPixelEmbeddings:
        """The frame's per-pixel embeddings, computed where asked (the pipeline asks for the cells under each mask;
        the feature field, in its own thread, for all of them): the model's pixel head is ~6 % of its forward pass
        at 640x480, and a mask covers a few percent of the grid."""
        mf = mask_features[:1]
        heads = self.model.heads

        def window(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            with torch.inference_mode():  # (any thread: the mode is per thread)
                px = heads.pixels(mf[:, :, y0:y1, x0:x1])[0]
            return px.float().cpu().numpy().astype(np.float32, copy=False)

        return LazyPixelEmbeddings(shape=(mf.shape[2], mf.shape[3], self.embedding_dim), window=window)

    @torch.inference_mode()
    def ground(self, rgb: np.ndarray) -> FrameGrounding:
        if self._prompts is None or self._instruction is None:
            raise GrounderError("no instruction set (call set_instruction first)")
        H, W = rgb.shape[:2] if isinstance(rgb, np.ndarray) and rgb.ndim == 3 else (0, 0)
        t0 = time.perf_counter()
        x = self.prepare(rgb)
        t1 = time.perf_counter()
        out, mask_features = self.forward_only(x, pixel_sem=False)
        t2 = time.perf_counter()
        E = len(self._instruction.entities)
        logits = out.entity_masks[0, :E].float().cpu().numpy()
        masks = [mask_from_logits(m, (H, W)) for m in logits]
        scores = out.entity_scores[0, :E].float().cpu().numpy()
        ents = [EntityResult(phrase=e.phrase, entity_index=i, score=float(scores[i]), mask=masks[i][0],
                             box=masks[i][1]) for i, e in enumerate(self._instruction.entities)]
        pix = self._lazy_pixels(mask_features)
        t3 = time.perf_counter()
        self.last_timings = {"model_prepare": (t1 - t0) * 1e3, "model_forward": (t2 - t1) * 1e3,
                             "model_post": (t3 - t2) * 1e3}
        return FrameGrounding(entities=ents, pixel_embeddings=pix)

    @torch.inference_mode()
    def segment_proposals(self, rgb: np.ndarray) -> np.ndarray:
        """(Q, h, w) float32 mask logits of FIND's segmentation proposals for ``rgb`` (task ``segment``, no prompt;
        h, w = the model's mask resolution); the instruction in force is untouched. What a click selects from
        (:func:`find_ros.grounding.click.mask_at_click`)."""
        out = self.model(self.model.encode_image(self.prepare(rgb)), None, task="segment", pixel_sem=False)
        return out.object_masks[0].float().cpu().numpy().astype(np.float32, copy=False)

    # ------------------------------------------------------------------ query embeddings

    @torch.inference_mode()
    def embed_instruction(self, instruction: Instruction) -> np.ndarray:
        """(E, D) float32 unit-norm entity embeddings (instruction-only: prompts never attend to the image).

        Unknown words are warned about (:meth:`find_unknown_words`) but do not change :attr:`unknown_words`,
        which belongs to the instruction being grounded."""
        self.find_unknown_words([e.text for e in instruction.entities])
        prompts = self.model.encode_instructions([instruction])
        h, w = self.model.config.vision.image_size
        feats = self.model.encode_image(torch.zeros(1, 3, h, w, device=self.device, dtype=self.model.dtype))
        out = self.model(feats, prompts, task=self.task, pixel_sem=False)
        e = out.entity_sem[0, : len(instruction.entities)].float()
        return F.normalize(e, dim=-1).cpu().numpy().astype(np.float32)

    def embed_text(self, text: str) -> np.ndarray:
        """(D,) float32 unit-norm embedding of ``text`` as one entity."""
        return self.embed_instruction(_entity_instruction(text))[0]
