"""HSV colour-word grounder: a BASELINE, not FIND.

It grounds phrases by the colour words they contain ("the red cube" -> red pixels) and interleaved
references by their dominant colour. It knows nothing about shapes or categories and never reads
simulator ground truth; it exists so the node runs without a trained model and as the floor FIND is
compared against.

Colours live in OpenCV's 8-bit HSV (H 0..179, S and V 0..255). Each colour name has a range
(:data:`COLOUR_RANGES`); a pixel inside several ranges belongs to the one whose range centre is nearest
(distances in half-widths), so every pixel has at most one colour. Per entity: the pixels of its colour(s),
a morphological open, the largest connected component; score = colour purity x area factor, in [0, 1].

Pixel embeddings: a soft colour membership per pixel (``exp(-(d / 0.15)^2)`` of the normalised distance
``d`` to each colour's range, 1 inside it), unit-normalised, at 1/4 resolution: D = len(COLOUR_NAMES).
Instruction embeddings live in the same space (one-hot of the entity's colours).
"""
from __future__ import annotations

import dataclasses
import logging
import re

import cv2
import numpy as np

from find_ros.grounder import EntityResult, FrameGrounding, GrounderError, mask_box
from find_ros.instruction import Entity, Instruction, InstructionError

__all__ = ["ColourRange", "COLOUR_RANGES", "COLOUR_NAMES", "HsvBaselineGrounder", "colour_words",
           "colour_labels", "colour_membership"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ColourRange:
    """One colour name's region of OpenCV HSV space."""

    hue_centre: float | None
    """Hue centre (0..179, circular); ``None`` for achromatic colours (any hue)."""
    hue_half_width: float
    """Half-width of the hue interval (hue units); ignored when ``hue_centre`` is None."""
    sat: tuple[int, int]
    """Inclusive saturation range (0..255)."""
    val: tuple[int, int]
    """Inclusive value range (0..255)."""


COLOUR_RANGES: dict[str, ColourRange] = {
    "red": ColourRange(0.0, 8.5, (90, 255), (50, 255)),
    "orange": ColourRange(14.5, 5.5, (200, 255), (110, 255)),
    "yellow": ColourRange(27.5, 7.0, (90, 255), (70, 255)),
    "green": ColourRange(60.0, 25.5, (60, 255), (35, 255)),
    "cyan": ColourRange(93.0, 7.5, (60, 255), (50, 255)),
    "blue": ColourRange(115.5, 15.0, (70, 255), (35, 255)),
    "purple": ColourRange(143.0, 12.5, (50, 255), (35, 255)),
    "pink": ColourRange(168.0, 14.0, (30, 170), (70, 255)),
    "white": ColourRange(None, 0.0, (0, 45), (130, 255)),
    "black": ColourRange(None, 0.0, (0, 255), (0, 45)),
    "grey": ColourRange(None, 0.0, (0, 45), (46, 129)),
    "brown": ColourRange(14.0, 10.0, (90, 255), (35, 130)),
}
"""Colour name -> HSV range. Ranges may overlap; the nearest range centre wins (see module docstring).

Diffuse shading scales V and keeps H and S, so colours that differ only in V are ambiguous under shading:
orange vs brown (V 110..130 overlaps; orange also needs S >= 200) and white vs grey (split at V = 130); a shaded white surface reads as
grey and a brightly lit brown one as orange. Tuned on ``find_ros.sim`` albedos and common swatches."""

COLOUR_NAMES: tuple[str, ...] = tuple(COLOUR_RANGES)
"""Colour names in embedding order (D = 12)."""

_SYNONYMS = {"gray": "grey", "violet": "purple", "magenta": "pink", "turquoise": "cyan"}
_WORD = re.compile(r"[a-z]+")
_NONE = 255
_SOFT_SCALE = 0.15
_BINS_S = _BINS_V = 64  # label lookup table: 180 hues x 64 saturation bins x 64 value bins


def colour_words(text: str) -> list[str]:
    """Colour names (canonical, in order, no repeats) mentioned in ``text``: ``"the gray mug"`` -> ``["grey"]``."""
    out: list[str] = []
    for w in _WORD.findall(text.lower()):
        w = _SYNONYMS.get(w, w)
        if w in COLOUR_RANGES and w not in out:
            out.append(w)
    return out


def _range_arrays() -> dict[str, np.ndarray]:
    r = COLOUR_RANGES.values()
    return {
        "hc": np.array([c.hue_centre if c.hue_centre is not None else 0.0 for c in r], np.float32),
        "hw": np.array([max(c.hue_half_width, 1.0) for c in r], np.float32),
        "chrom": np.array([c.hue_centre is not None for c in r]),
        "slo": np.array([c.sat[0] for c in r], np.float32), "shi": np.array([c.sat[1] for c in r], np.float32),
        "vlo": np.array([c.val[0] for c in r], np.float32), "vhi": np.array([c.val[1] for c in r], np.float32),
    }


_R = _range_arrays()


def _distances(hsv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For (N, 3) float HSV: (N, C) normalised distance to each range (0 inside) and to each range centre."""
    h, s, v = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    dh = np.abs(h - _R["hc"])
    dh = np.minimum(dh, 180.0 - dh)
    chrom = _R["chrom"]
    out_h = np.where(chrom, np.maximum(dh - _R["hw"], 0.0) / 30.0, 0.0)
    out_s = np.maximum(np.maximum(_R["slo"] - s, s - _R["shi"]), 0.0) / 255.0
    out_v = np.maximum(np.maximum(_R["vlo"] - v, v - _R["vhi"]), 0.0) / 255.0
    box = np.sqrt(out_h ** 2 + out_s ** 2 + out_v ** 2)
    sc, sr = (_R["slo"] + _R["shi"]) / 2, np.maximum((_R["shi"] - _R["slo"]) / 2, 1.0)
    vc, vr = (_R["vlo"] + _R["vhi"]) / 2, np.maximum((_R["vhi"] - _R["vlo"]) / 2, 1.0)
    cen = np.where(chrom, (dh / _R["hw"]) ** 2, 0.0) + ((s - sc) / sr) ** 2 + ((v - vc) / vr) ** 2
    return box, cen


def _build_lut() -> np.ndarray:
    h, s, v = np.meshgrid(np.arange(180, dtype=np.float32),
                          (np.arange(_BINS_S, dtype=np.float32) + 0.5) * (256 / _BINS_S),
                          (np.arange(_BINS_V, dtype=np.float32) + 0.5) * (256 / _BINS_V), indexing="ij")
    hsv = np.stack([h.ravel(), s.ravel(), v.ravel()], axis=1)
    box, cen = _distances(hsv)
    cen = np.where(box <= 0.0, cen, np.inf)
    lab = np.argmin(cen, axis=1).astype(np.uint8)
    lab[~np.isfinite(cen.min(axis=1))] = _NONE
    return lab.reshape(180, _BINS_S, _BINS_V)


_LUT: np.ndarray | None = None


def _lut() -> np.ndarray:
    global _LUT
    if _LUT is None:  # built on first use (~0.3 s), not at import
        _LUT = _build_lut()
    return _LUT


def colour_labels(rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 colour index into :data:`COLOUR_NAMES` per pixel of an RGB uint8 image; 255 = no colour."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    return _lut()[hsv[..., 0], hsv[..., 1] >> 2, hsv[..., 2] >> 2]


def colour_membership(rgb: np.ndarray) -> np.ndarray:
    """(H, W, D) float32 unit-norm soft colour membership of an RGB uint8 image."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.float32)
    box, _ = _distances(hsv)
    m = np.exp(-(box / _SOFT_SCALE) ** 2).astype(np.float32)
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    return m.reshape(*rgb.shape[:2], len(COLOUR_NAMES))


def _check_rgb(rgb: np.ndarray, what: str) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise GrounderError(f"{what} must be an (H, W, 3) uint8 RGB array, got "
                            f"{getattr(rgb, 'shape', type(rgb))} {getattr(rgb, 'dtype', '')}")


class HsvBaselineGrounder:
    """Colour-word BASELINE grounder (OpenCV HSV ranges); implements ``Grounder`` and ``QueryEmbedder``.

    Not FIND: it matches colour words and reference colours only (see the module docstring).
    """

    name = "hsv-baseline"

    def __init__(self, *, open_px: int = 1, area_ref_fraction: float = 0.002, embedding_stride: int = 4,
                 min_chromatic_fraction: float = 0.2) -> None:
        """
        Args:
            open_px: radius of the morphological open that removes speckles ((2r+1)^2 ellipse; 0 disables).
            area_ref_fraction: component area (fraction of the image) at which the area factor of the score
                reaches 1; the factor is ``min(1, sqrt(area / area_ref_fraction))``.
            embedding_stride: pixel embeddings are computed at 1/stride resolution.
            min_chromatic_fraction: an unmasked reference image takes its dominant *chromatic* colour when
                chromatic pixels cover at least this fraction of it (else the dominant colour overall).
        """
        if open_px < 0 or area_ref_fraction <= 0 or embedding_stride < 1 or not 0 <= min_chromatic_fraction <= 1:
            raise ValueError(f"bad HsvBaselineGrounder settings: open_px={open_px}, "
                             f"area_ref_fraction={area_ref_fraction}, embedding_stride={embedding_stride}, "
                             f"min_chromatic_fraction={min_chromatic_fraction}")
        self.open_px = int(open_px)
        self.area_ref_fraction = float(area_ref_fraction)
        self.embedding_stride = int(embedding_stride)
        self.min_chromatic_fraction = float(min_chromatic_fraction)
        self._instruction: Instruction | None = None
        self._targets: list[list[int]] = []
        self._queries: np.ndarray | None = None
        self._kernel = (cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * open_px + 1, 2 * open_px + 1))
                        if open_px > 0 else None)

    # ------------------------------------------------------------------------------ instruction
    def reference_colour(self, image: np.ndarray, mask: np.ndarray | None = None) -> int | None:
        """Index of the dominant colour of a reference image (inside ``mask`` when given); None if none."""
        _check_rgb(image, "reference image")
        lab = colour_labels(image)
        lab = lab[mask] if mask is not None else lab.ravel()
        lab = lab[lab != _NONE]
        if lab.size == 0:
            return None
        counts = np.bincount(lab, minlength=len(COLOUR_NAMES))
        if mask is None:
            chrom = counts * _R["chrom"]
            if chrom.sum() >= self.min_chromatic_fraction * lab.size:
                counts = chrom
        return int(np.argmax(counts))

    def _entity_colours(self, instruction: Instruction, entity: Entity) -> list[int]:
        """Colour indices an entity asks for: its references' dominant colours, else its colour words."""
        if entity.reference_indices:
            out = []
            for k in entity.reference_indices:
                ref = instruction.references[k]
                c = self.reference_colour(ref.image, ref.mask)
                if c is not None and c not in out:
                    out.append(c)
            return out
        return [COLOUR_NAMES.index(w) for w in colour_words(entity.text)]

    def set_instruction(self, instruction: Instruction) -> None:
        """Resolve each entity to colour indices (entities with none will score 0)."""
        if not isinstance(instruction, Instruction):
            raise InstructionError(f"expected an Instruction, got {type(instruction).__name__}")
        _lut()  # build the lookup table now, not on the first frame
        targets = [self._entity_colours(instruction, e) for e in instruction.entities]
        for e, t in zip(instruction.entities, targets):
            if not t:
                log.warning("hsv-baseline: entity %r names no colour it knows (%s) and no usable reference: "
                            "it will never be found", e.phrase, ", ".join(COLOUR_NAMES))
        self._targets = targets
        self._queries = self._embed_targets(targets)
        self._instruction = instruction

    def clear_instruction(self) -> None:
        self._instruction, self._targets, self._queries = None, [], None

    @staticmethod
    def _embed_targets(targets: list[list[int]]) -> np.ndarray:
        D = len(COLOUR_NAMES)
        q = np.zeros((len(targets), D), np.float32)
        for i, t in enumerate(targets):
            if t:
                q[i, t] = 1.0
            else:  # no preference: the uniform direction
                q[i] = 1.0
        return q / np.linalg.norm(q, axis=1, keepdims=True)

    def embed_instruction(self, instruction: Instruction) -> np.ndarray:
        """(E, D) unit-norm: one-hot (averaged over several) of each entity's colours; uniform when none."""
        return self._embed_targets([self._entity_colours(instruction, e) for e in instruction.entities])

    # ------------------------------------------------------------------------------ frames
    def pixel_embeddings(self, rgb: np.ndarray) -> np.ndarray:
        """(h, w, D) float32 unit-norm soft colour memberships at 1/``embedding_stride`` resolution."""
        _check_rgb(rgb, "frame")
        H, W = rgb.shape[:2]
        s = self.embedding_stride
        small = rgb if s == 1 else cv2.resize(rgb, (max(1, W // s), max(1, H // s)), interpolation=cv2.INTER_AREA)
        return colour_membership(small)

    def ground(self, rgb: np.ndarray) -> FrameGrounding:
        """One result per entity: largest connected component of its colour(s), with a [0, 1] score."""
        if self._instruction is None:
            raise GrounderError("hsv-baseline: no instruction set (call set_instruction first)")
        _check_rgb(rgb, "frame")
        H, W = rgb.shape[:2]
        labels = colour_labels(rgb)
        emb = self.pixel_embeddings(rgb)
        results = []
        for i, (entity, target) in enumerate(zip(self._instruction.entities, self._targets)):
            mask, score = self._component(rgb, labels, target, emb, self._queries[i])
            results.append(EntityResult(phrase=entity.phrase, entity_index=i, score=score, mask=mask,
                                        box=mask_box(mask)))
        return FrameGrounding(entities=results, pixel_embeddings=emb)

    def _component(self, rgb: np.ndarray, labels: np.ndarray, target: list[int], emb: np.ndarray,
                   query: np.ndarray) -> tuple[np.ndarray, float]:
        shape = labels.shape
        empty = np.zeros(shape, bool)
        if not target:
            return empty, 0.0
        raw = np.isin(labels, np.asarray(target, np.uint8)).astype(np.uint8)
        if self._kernel is not None:
            raw = cv2.morphologyEx(raw, cv2.MORPH_OPEN, self._kernel)
        n, cc, stats, _ = cv2.connectedComponentsWithStats(raw, connectivity=8)
        if n <= 1:
            return empty, 0.0
        best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        mask = cc == best
        area = float(stats[best, cv2.CC_STAT_AREA]) / (shape[0] * shape[1])
        # purity: mean similarity of the component's pixel embeddings to the entity's colour vector
        h, w = emb.shape[:2]
        small = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        if small.any():
            purity = float(np.clip(emb[small] @ query, 0.0, 1.0).mean())
        else:  # component smaller than one embedding cell: measure at full resolution
            purity = float(np.clip(colour_membership(np.ascontiguousarray(rgb[mask][None]))[0] @ query,
                                   0.0, 1.0).mean())
        area_factor = min(1.0, float(np.sqrt(area / self.area_ref_fraction)))
        return mask, float(np.clip(purity * area_factor, 0.0, 1.0))
