"""What one sim FIND-Bench sample holds (:class:`SimSample`: a rendered view with masks, referring phrases, an
interleaved instruction and a caption) and how samples are rendered and described (:class:`DataConfig`)."""
from __future__ import annotations

import dataclasses

import numpy as np

from find_ros.instruction import Instruction, Reference, parse_instruction


class DataError(ValueError):
    """Bad data configuration or cache; the message names the offending value."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How samples are rendered and described."""

    width: int = 128
    """Rendered image width (the model's input width)."""
    height: int = 96
    """Rendered image height."""
    n_objects: tuple[int, int] = (3, 8)
    """Objects per scene (inclusive range, passed to ``Scene.generate``)."""
    p_distractor: float = 0.5
    """Probability that a scene draws from only 2-3 categories and 2-3 colours (forces same-kind distractors)."""
    p_visual: float = 0.5
    """Probability that an interleaved entity's attribute words become a visual reference ``<k>`` (paper: 0.5)."""
    max_entities: int = 3
    """Most entities in one interleaved instruction."""
    min_pixels: int = 24
    """Visible objects with fewer pixels (at width x height) are never targets or anchors."""
    ref_size: int = 64
    """Side of the square reference crops (pixels)."""
    ref_variants: int = 4
    """Reference scenes rendered per (category, colour): the retrieval pool of each combination."""
    fov_deg: float = 70.0
    """Horizontal field of view of the sample camera (degrees)."""
    p_synonym: float = 0.0
    """Probability that a word of a phrase or caption is written as one of its synonyms (``tokenizer.SYNONYMS``:
    "ball" for "sphere", "to the left of" for "left of"). A word-level tokenizer folds them back, so this
    matters only for subword tokenizers (real CLIP / SigLIP / LLM text encoders); 0 leaves samples unchanged."""

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16:
            raise DataError(f"image size {self.width}x{self.height} is too small (min 16x16)")
        if not all(0.0 <= p <= 1.0 for p in (self.p_visual, self.p_distractor, self.p_synonym)):
            raise DataError(f"probabilities must be in [0, 1]: p_visual={self.p_visual}, "
                            f"p_distractor={self.p_distractor}, p_synonym={self.p_synonym}")
        if self.max_entities < 1:
            raise DataError(f"max_entities must be >= 1, got {self.max_entities}")
        lo, hi = self.n_objects
        if not 1 <= lo <= hi:
            raise DataError(f"n_objects must be 1 <= lo <= hi, got {self.n_objects}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataConfig":
        d = dict(d)
        if "n_objects" in d:
            d["n_objects"] = tuple(d["n_objects"])
        return cls(**d)


@dataclasses.dataclass
class ObjectInfo:
    """A visible object of a sample."""

    id: int
    """Instance id in ``SimSample.instance``."""
    category: str
    colour: str
    size: str
    pixels: int
    """Visible pixel count at the sample resolution."""
    center_cam: tuple[float, float, float]
    """Object centre in the camera optical frame (metres, x right, y down, z forward)."""


@dataclasses.dataclass
class Referring:
    """A referring phrase for one object."""

    object_id: int
    phrase: str
    """E.g. ``"the small red cube left of the blue torus"``."""
    attributes: str
    """The attribute words used (``"small red cube"``), replaced by ``<k>`` in interleaved form."""
    relation: str | None
    """Relation suffix (``"left of the blue torus"``) or ``None``."""


@dataclasses.dataclass
class Interleaved:
    """An interleaved instruction over several objects of the sample."""

    text: str
    """Instruction text with ``<k>`` placeholders, entities separated by ``", "``."""
    object_ids: list[int]
    """Target object per entity (instruction order)."""
    text_phrases: list[str]
    """The fully textual phrase of each entity (for the text-only / separate baselines)."""
    visual: list[bool]
    """Whether each entity carries a visual reference."""
    ref_index: list[int]
    """Per entity: index into ``SimSample.references`` or -1."""


@dataclasses.dataclass
class SimSample:
    """One rendered view with its annotations."""

    split: str
    index: int
    seed: int
    """Scene seed."""
    image: np.ndarray
    """(H, W, 3) uint8 RGB."""
    instance: np.ndarray
    """(H, W) uint8 object id per pixel (0 = room)."""
    objects: list[ObjectInfo]
    """Visible objects (>= ``min_pixels``)."""
    referring: list[Referring]
    interleaved: Interleaved
    caption: str
    references: list[tuple[np.ndarray, np.ndarray]]
    """Reference crops ((S, S, 3) uint8, (S, S) bool) used by ``interleaved``."""
    reference_sources: list[tuple[int, int, str, str]]
    """Per reference: (scene seed, object id, category, colour) it was rendered from."""
    staged: bool = False
    """True when every random scene draw failed and the sample comes from a staged scene (a target in a
    row of objects seen from the side, see ``SimFindDataset.staged``)."""

    def mask(self, object_id: int) -> np.ndarray:
        """(H, W) bool mask of one object."""
        return self.instance == object_id

    def instruction(self, *, mode: str = "interleaved") -> Instruction:
        """``interleaved`` (as built), ``text`` (all entities textual) or ``text_only`` (visual references dropped)."""
        il = self.interleaved
        if mode == "interleaved":
            refs = [Reference(image=im, mask=m) for im, m in self.references]
            return parse_instruction(il.text, refs, id=f"{self.split}:{self.index}")
        if mode == "text":
            return parse_instruction(", ".join(il.text_phrases), id=f"{self.split}:{self.index}:text")
        if mode == "text_only":
            parts = [" ".join(p.replace(f"<{k}>", " ").split()) or "the" for k, p in
                     ((il.ref_index[i], ph) for i, ph in enumerate(il.text.split(", ")))]
            return parse_instruction(", ".join(parts), id=f"{self.split}:{self.index}:text_only")
        raise DataError(f"unknown instruction mode {mode!r} (interleaved, text, text_only)")

    def to_meta(self) -> dict:
        return {
            "split": self.split,
            "index": self.index,
            "seed": self.seed,
            "objects": [dataclasses.asdict(o) for o in self.objects],
            "referring": [dataclasses.asdict(r) for r in self.referring],
            "interleaved": dataclasses.asdict(self.interleaved),
            "caption": self.caption,
            "reference_sources": [list(s) for s in self.reference_sources],
            "staged": bool(self.staged),
        }

    @classmethod
    def from_meta(cls, meta: dict, image, instance, references) -> "SimSample":
        return cls(
            split=meta["split"],
            index=int(meta["index"]),
            seed=int(meta["seed"]),
            image=image,
            instance=instance,
            objects=[ObjectInfo(**{**o, "center_cam": tuple(o["center_cam"])}) for o in meta["objects"]],
            referring=[Referring(**r) for r in meta["referring"]],
            interleaved=Interleaved(**meta["interleaved"]),
            caption=meta["caption"],
            references=references,
            reference_sources=[tuple(s) for s in meta["reference_sources"]],
            staged=bool(meta.get("staged", False)),
        )
