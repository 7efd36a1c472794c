"""FIND-Bench-style data from the simulated world: referring phrases, interleaved instructions, captions.

One sample = one rendered view of one sim scene at the model's input resolution with:

* per-object ground truth (instance image -> masks) for every visible object,
* a referring phrase per visible object, just specific enough to single it out among the visible
  objects (attributes first, then a spatial relation to a unique anchor: "the red cube left of the
  blue torus"); relations come from ground-truth geometry in the camera frame,
* an interleaved instruction over 1..``max_entities`` entities in which each entity's attribute words
  are replaced by a visual reference ``<k>`` with probability ``p_visual`` (its relation words stay:
  "the <0> left of the blue torus"); the reference is a crop + mask of an object of the same
  category and colour rendered from a *different* scene (the paper's retrieved replacement),
* a caption naming the visible objects left to right (retrieval gallery text).

Splits draw scene seeds from disjoint ranges. ``train``/``val``/``test`` never contain a
``HELDOUT_PAIRS`` (category, colour) combination; on ``heldout`` every target has one. A sample tries up
to 20 random scene draws; heldout draws only *allow* a held-out pair and look from a random side, so about
70 % of them show no held-out target and about 1 sample in 1700 failed all 20 (``find-ros eval --split
heldout --seed 918273`` crashed on sample 9182730058). When every draw fails, the sample comes from a
*staged* scene instead (:meth:`SimFindDataset.staged`: the target in a short row of other categories, seen
from the side; ``SimSample.staged`` is True), so every index yields a sample. Everything is deterministic by
(split, index). :func:`build_shards` caches rendered samples as ``.npz`` shards so training never
re-renders (about 30 kB per sample compressed at 128x96).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from find_ros.instruction import Instruction, Reference, parse_instruction

__all__ = [
    "DataConfig",
    "DataError",
    "ObjectInfo",
    "Referring",
    "Interleaved",
    "SimSample",
    "SimFindDataset",
    "ShardDataset",
    "HELDOUT_PAIRS",
    "SPLIT_SEED_BASE",
    "RELATIONS",
    "vocabulary",
    "build_shards",
    "is_heldout_pair",
]

log = logging.getLogger(__name__)

SPLIT_SEED_BASE = {"train": 0, "val": 10_000_000, "test": 20_000_000, "heldout": 30_000_000}
"""First scene seed of each split; a split uses seeds ``base + index``; references use ``base + 5_000_000 + ...``."""
_REF_OFFSET = 5_000_000
RELATIONS = ("left of", "right of", "in front of", "behind", "on")
_RANDOM_DRAWS = 20
"""Random scene draws per sample before the staged fallback (:meth:`SimFindDataset.staged`)."""
_STAGED_TRIES = 8
"""Staged scenes tried after the random draws (the second half: a large target and one other large object)."""
_FOOTPRINTS: dict[tuple[str, str], float] = {}
_FILLER = ("the", "a", "an", "and", "of", "left", "right", "in", "front", "behind", "on", "find", "with")


def _sim():
    import find_ros.sim as sim  # imported lazily: the COCO-only path needs no open3d

    return sim


def _heldout_pairs() -> frozenset[tuple[str, str]]:
    sim = _sim()
    colours = list(sim.COLOURS)
    # one colour per category, spread over the palette: every category and most colours still occur in training
    return frozenset((c, colours[(3 + 5 * i) % len(colours)]) for i, c in enumerate(sim.CATEGORIES))


class _Lazy:
    def __init__(self, fn):
        self._fn, self._v = fn, None

    def get(self):
        if self._v is None:
            self._v = self._fn()
        return self._v


_HELDOUT = _Lazy(_heldout_pairs)


def is_heldout_pair(category: str, colour: str) -> bool:
    """True when (category, colour) is reserved for the ``heldout`` split."""
    return (category, colour) in _HELDOUT.get()


def __getattr__(name: str):
    if name == "HELDOUT_PAIRS":
        return _HELDOUT.get()
    raise AttributeError(name)


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


def vocabulary() -> list[str]:
    """Every word the generated phrases and captions use (for word-level tokenizers)."""
    sim = _sim()
    words: list[str] = list(_FILLER)
    for c in sim.CATEGORIES:
        words.extend(c.split())
    words.extend(sim.COLOURS)
    words.extend(sim.SIZES)
    out, seen = [], set()
    for w in words:
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


# ----------------------------------------------------------------------------- geometry / language


def _relation_matrix(objs: list[ObjectInfo], boxes: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """rel[name][i, j] is True when ``objs[i] <name> objs[j]`` holds (camera frame / world boxes)."""
    c = np.array([o.center_cam for o in objs], dtype=np.float64)
    u = c[:, 0] / np.maximum(c[:, 2], 1e-3)  # image-plane x (tan of bearing)
    du = u[:, None] - u[None, :]
    dz = c[:, 2][:, None] - c[:, 2][None, :]
    mn = np.array([boxes[o.id][0] for o in objs])
    mx = np.array([boxes[o.id][1] for o in objs])
    ctr = (mn + mx) / 2
    inside_xy = (
        (ctr[:, None, 0] >= mn[None, :, 0]) & (ctr[:, None, 0] <= mx[None, :, 0])
        & (ctr[:, None, 1] >= mn[None, :, 1]) & (ctr[:, None, 1] <= mx[None, :, 1])
    )
    on = inside_xy & (np.abs(mn[:, None, 2] - mx[None, :, 2]) < 0.06)
    eye = np.eye(len(objs), dtype=bool)
    return {
        "left of": (du < -0.15) & ~eye,
        "right of": (du > 0.15) & ~eye,
        "in front of": (dz < -0.4) & (np.abs(du) < 0.35) & ~eye & ~on.T,
        "behind": (dz > 0.4) & (np.abs(du) < 0.35) & ~eye & ~on,
        "on": on & ~eye,
    }


def _describe_levels(o: ObjectInfo) -> list[str]:
    return [o.category, f"{o.colour} {o.category}", f"{o.size} {o.colour} {o.category}"]


def _matches(desc_level: int, a: ObjectInfo, b: ObjectInfo) -> bool:
    if a.category != b.category:
        return False
    if desc_level >= 1 and a.colour != b.colour:
        return False
    if desc_level >= 2 and a.size != b.size:
        return False
    return True


def _minimal_anchor_phrase(anchor: ObjectInfo, objs: list[ObjectInfo], first: int = 0) -> str | None:
    for lvl, d in enumerate(_describe_levels(anchor)):
        if lvl >= first and sum(_matches(lvl, anchor, o) for o in objs) == 1:
            return f"the {d}"
    return None


def _referring(objs: list[ObjectInfo], rel: dict[str, np.ndarray], rng: np.random.Generator) -> list[Referring]:
    out = []
    for i, t in enumerate(objs):
        levels = _describe_levels(t)
        unique_lvl = next((lv for lv in range(3) if sum(_matches(lv, t, o) for o in objs) == 1), None)
        # attributes: at least colour + category (what a visual reference stands for), sometimes size too
        lvl = 1 if rng.random() < 0.6 else 2
        if unique_lvl is not None:
            lvl = max(lvl, unique_lvl)
        attrs = levels[lvl]
        same = [j for j, o in enumerate(objs) if _matches(1, t, o)]  # what a colour+category reference cannot tell apart
        need_rel = len(same) > 1 or (unique_lvl is None)
        relation = None
        if need_rel or rng.random() < 0.3:
            cands = []
            for name, m in rel.items():
                for j, a in enumerate(objs):
                    if j == i or not m[i, j]:
                        continue
                    # the relation must single out the target among same-looking objects
                    if sum(bool(m[k, j]) for k in same) != 1:
                        continue
                    ap = _minimal_anchor_phrase(a, objs, int(rng.random() < 0.5))
                    if ap is not None:
                        cands.append(f"{name} {ap}")
            if cands:
                relation = cands[int(rng.integers(len(cands)))]
        if relation is None and (unique_lvl is None or len(same) > 1):
            continue  # not singled out by colour+category (what a reference shows) or a relation: never a target
        phrase = f"the {attrs}" + (f" {relation}" if relation else "")
        out.append(Referring(object_id=t.id, phrase=phrase, attributes=attrs, relation=relation))
    return out


def _synonym_table() -> tuple[dict[str, list[str]], dict[tuple[str, ...], list[list[str]]]]:
    """canonical word -> its synonyms, and canonical relation words -> their longer forms (tokenizer tables)."""
    from find_ros.model.tokenizer import PHRASE_SYNONYMS, SYNONYMS

    words: dict[str, list[str]] = {}
    for syn, canon in SYNONYMS.items():
        words.setdefault(canon, []).append(syn)
    relations: dict[tuple[str, ...], list[list[str]]] = {}
    for src, dst in PHRASE_SYNONYMS:
        if dst in RELATIONS:
            relations.setdefault(tuple(dst.split()), []).append(src.split())
    return words, relations


def paraphrase(text: str, rng: np.random.Generator, p: float) -> str:
    """``text`` with each word or relation that has synonyms rewritten as one of them with probability ``p``
    ("the large sphere left of the grey torus" -> "the big ball to the left of the grey ring"); the
    tokenizer's normalisation maps every rewrite back. ``p <= 0`` returns ``text`` and draws nothing."""
    if p <= 0.0:
        return text
    words, relations = _synonym_table()
    toks = text.split()
    out: list[str] = []
    i = 0
    while i < len(toks):
        rel = next((r for r in relations if tuple(toks[i:i + len(r)]) == r), None)
        if rel is not None:
            forms = relations[rel]
            out.extend(forms[int(rng.integers(len(forms)))] if rng.random() < p else rel)
            i += len(rel)
            continue
        syns = words.get(toks[i])
        out.append(syns[int(rng.integers(len(syns)))] if syns and rng.random() < p else toks[i])
        i += 1
    return " ".join(out)


def _paraphrased(r: Referring, rng: np.random.Generator, p: float) -> Referring:
    attrs = paraphrase(r.attributes, rng, p)
    relation = paraphrase(r.relation, rng, p) if r.relation else None
    return Referring(object_id=r.object_id, phrase=f"the {attrs}" + (f" {relation}" if relation else ""),
                     attributes=attrs, relation=relation)


def _caption(objs: list[ObjectInfo]) -> str:
    order = sorted(objs, key=lambda o: o.center_cam[0] / max(o.center_cam[2], 1e-3))
    names = [f"a {o.size} {o.colour} {o.category}" for o in order]
    if len(names) == 1:
        return names[0]
    return " ".join(names[:-1]) + " and " + names[-1]


# ----------------------------------------------------------------------------- dataset


class SimFindDataset:
    """Deterministic samples of one split: ``ds[i]`` renders scene ``SPLIT_SEED_BASE[split] + i``.

    Indices whose view shows too few objects are re-drawn from the next seeds (deterministically).
    """

    def __init__(self, *, split: str, config: DataConfig | None = None) -> None:
        if split not in SPLIT_SEED_BASE:
            raise DataError(f"unknown split {split!r}; choose from {sorted(SPLIT_SEED_BASE)}")
        self.split = split
        self.config = config or DataConfig()
        self._ref_cache: dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray, int, int] | None] = {}

    # -- scenes
    def _exclude(self):
        if self.split == "heldout":
            return None
        return lambda category, colour, size: is_heldout_pair(category, colour)

    def _view(self, scene, rng: np.random.Generator, width: int, height: int, target_ids=None):
        sim = _sim()
        objs = [o for o in scene.objects if target_ids is None or o.id in target_ids]
        centers = np.array([o.center for o in objs], dtype=np.float64)
        look = centers.mean(axis=0)
        look[2] = min(look[2], 0.5)
        lo = np.array([0.35, 0.35])
        room = np.asarray(getattr(scene, "room_size", (6.0, 6.0, 3.0)), dtype=np.float64)
        room_min, room_max = self._room_bounds(scene, room)
        spread = float(np.max(np.ptp(centers[:, :2], axis=0))) if len(objs) > 1 else 0.5
        for _ in range(12):
            ang = rng.uniform(0, 2 * np.pi)
            dist = rng.uniform(1.3, 2.2) + 0.6 * spread
            eye = look + np.array([np.cos(ang) * dist, np.sin(ang) * dist, 0.0])
            eye[2] = rng.uniform(1.1, 1.9)
            if np.all(eye[:2] > room_min[:2] + lo) and np.all(eye[:2] < room_max[:2] - lo):
                break
        else:
            eye[:2] = np.clip(eye[:2], room_min[:2] + lo, room_max[:2] - lo)
        T = sim.look_at(eye, look)
        r = sim.SimRenderer(scene, width=width, height=height, fov_deg=self.config.fov_deg)
        return r.render(T)

    @staticmethod
    def _room_bounds(scene, room):
        mn = getattr(scene, "room_min", None)
        mx = getattr(scene, "room_max", None)
        if mn is not None and mx is not None:
            return np.asarray(mn, float), np.asarray(mx, float)
        # sim convention: floor at z = 0, room centred on the origin
        return np.array([-room[0] / 2, -room[1] / 2, 0.0]), np.array([room[0] / 2, room[1] / 2, room[2]])

    def _scene(self, seed: int, rng: np.random.Generator):
        sim = _sim()
        kw = {}
        if rng.random() < self.config.p_distractor:
            cats = list(sim.CATEGORIES)
            cols = list(sim.COLOURS)
            kw["categories"] = [cats[i] for i in rng.choice(len(cats), size=int(rng.integers(2, 4)), replace=False)]
            kw["colours"] = [cols[i] for i in rng.choice(len(cols), size=int(rng.integers(2, 4)), replace=False)]
        if self.split == "heldout":
            # bias toward held-out combinations: every scene gets drawn with one of them available
            pairs = sorted(_HELDOUT.get())
            c, col = pairs[int(rng.integers(len(pairs)))]
            kw.setdefault("categories", [])
            kw.setdefault("colours", [])
            kw["categories"] = sorted(set(kw["categories"]) | {c}) if kw["categories"] else None
            kw["colours"] = sorted(set(kw["colours"]) | {col}) if kw["colours"] else None
        return sim.Scene.generate(seed, n_objects=tuple(self.config.n_objects), exclude=self._exclude(), **kw)

    # -- references
    def _reference(self, category: str, colour: str, variant: int):
        key = (category, colour, variant)
        if key in self._ref_cache:
            return self._ref_cache[key]
        sim = _sim()
        cats, cols = list(sim.CATEGORIES), list(sim.COLOURS)
        base = SPLIT_SEED_BASE[self.split] + _REF_OFFSET
        out = None
        for attempt in range(4):
            seed = base + (cats.index(category) * len(cols) + cols.index(colour)) * 100 + variant * 8 + attempt
            scene = sim.Scene.generate(seed, n_objects=(1, 3), categories=[category], colours=[colour])
            hits = [o for o in scene.objects if o.category == category and o.colour == colour]
            if not hits:
                continue
            o = hits[0]
            rng = np.random.default_rng(seed)
            fr = self._view(scene, rng, 160, 120, target_ids={o.id})
            m = fr.instance == o.id
            if m.sum() < 40:
                continue
            out = (*self._crop(fr.color, m), seed, int(o.id))
            break
        self._ref_cache[key] = out
        return out

    def _crop(self, color: np.ndarray, mask: np.ndarray):
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        side = int(max(y1 - y0, x1 - x0) * 1.3) + 2
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        pad = side
        img = np.pad(color, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        msk = np.pad(mask, ((pad, pad), (pad, pad)))
        ty, tx = cy - side // 2 + pad, cx - side // 2 + pad
        ci = img[ty : ty + side, tx : tx + side]
        cm = msk[ty : ty + side, tx : tx + side]
        s = self.config.ref_size
        ci = cv2.resize(ci, (s, s), interpolation=cv2.INTER_AREA)
        cm = cv2.resize(cm.astype(np.uint8), (s, s), interpolation=cv2.INTER_NEAREST).astype(bool)
        if not cm.any():
            cm[s // 2, s // 2] = True
        return np.ascontiguousarray(ci), cm

    # -- staged fallback scenes
    def _footprint(self, category: str, size: str) -> float:
        """Half-diagonal (m) of an object's floor footprint: a yaw-independent bound of its extent."""
        key = (category, size)
        r = _FOOTPRINTS.get(key)
        if r is None:
            sim = _sim()
            probe = sim.Scene.with_objects(0, [{"category": category, "colour": "grey", "size": size,
                                                "xy": (0.0, 0.0), "yaw": 0.0}], room_size=(6.0, 6.0, 3.0))
            o = probe.objects[0]
            r = _FOOTPRINTS[key] = float(np.linalg.norm(np.asarray(o.box_max[:2]) - np.asarray(o.box_min[:2])) / 2)
        return r

    def _staged(self, seed: int, rng: np.random.Generator, *, last_resort: bool):
        """A scene built so that a target exists and is seen: (scene, T_world_cam).

        The target is a held-out (category, colour) pair on the ``heldout`` split (any other pair elsewhere);
        1-2 other objects of *other* categories (so that "the <colour> <category>" singles the target out)
        stand with it in a row along x, and the camera looks at the row from the side (+-20 deg) at a distance
        that fits the row into 80 % of the image width. ``last_resort``: a large target and one other large
        object, neither of them furniture, the row filling the width, seen from a low eye.
        """
        sim = _sim()
        cats, cols, sizes = list(sim.CATEGORIES), list(sim.COLOURS), list(sim.SIZES)
        if self.split == "heldout":
            pairs = sorted(_HELDOUT.get())
        else:
            pairs = [(c, k) for c in cats for k in cols if not is_heldout_pair(c, k)]
        if last_resort:  # furniture makes the row long and the other object small
            pairs = [p for p in pairs if p[0] not in sim.FURNITURE]
        t_cat, t_col = pairs[int(rng.integers(len(pairs)))]
        t_size = "large" if last_resort else sizes[int(rng.integers(len(sizes)))]
        other_cats = [c for c in cats if c != t_cat]
        if last_resort:
            other_cats = [c for c in other_cats if c not in sim.FURNITURE]
        n_other = 1 if last_resort else int(rng.integers(1, 3))
        picked = [other_cats[i] for i in rng.choice(len(other_cats), size=n_other, replace=False)]
        specs = [{"category": t_cat, "colour": t_col, "size": t_size}]
        for c in picked:
            ok_cols = [k for k in cols if self.split == "heldout" or not is_heldout_pair(c, k)]
            specs.append({"category": c, "colour": ok_cols[int(rng.integers(len(ok_cols)))],
                          "size": "large" if last_resort else sizes[int(rng.integers(len(sizes)))]})
        order = [int(i) for i in rng.permutation(len(specs))]
        specs = [specs[i] for i in order]
        radii = [self._footprint(s["category"], s["size"]) for s in specs]
        gap = 0.3
        length = sum(2 * r for r in radii) + gap * (len(specs) - 1)
        x = -length / 2
        for s, r in zip(specs, radii):
            s["xy"] = (x + r, 0.0)
            s["yaw"] = float(rng.uniform(-np.pi, np.pi))
            x += 2 * r + gap
        cfg = self.config
        tan_h = np.tan(np.radians(cfg.fov_deg) / 2)
        if last_resort:  # the row fills the width, seen from a low eye: as many pixels per object as it gets
            dist = max((length / 2) / (0.95 * tan_h) + 0.5 * max(radii), 2 * max(radii) + 0.4)
            eye_z = rng.uniform(0.6, 0.9)
        else:
            dist = max((length / 2 + 0.15) / (0.8 * tan_h) + max(radii), 2 * max(radii) + 0.6)
            eye_z = rng.uniform(0.9, 1.5)
        room = (max(6.0, length + 2.0), max(6.0, 2 * dist + 2.0), 3.0)
        scene = sim.Scene.with_objects(seed, specs, room_size=room)
        look = np.array([0.0, 0.0, 0.3])
        if last_resort:
            look[2] = min(float(np.mean([o.center[2] for o in scene.objects])), 0.5)
        side = 1.0 if rng.random() < 0.5 else -1.0
        ang = side * np.pi / 2 + rng.uniform(-np.radians(20), np.radians(20))
        eye = np.array([np.cos(ang) * dist, np.sin(ang) * dist, eye_z])
        return scene, sim.look_at(eye, look)

    # -- samples
    def __getitem__(self, index: int) -> SimSample:
        if index < 0:
            raise IndexError(f"negative sample index {index}")
        cfg = self.config
        base = SPLIT_SEED_BASE[self.split]
        for attempt in range(_RANDOM_DRAWS):
            seed = base + index + attempt * 200_003
            rng = np.random.default_rng([seed, 7])
            scene = self._scene(seed, rng)
            fr = self._view(scene, rng, cfg.width, cfg.height)
            sample = self._annotate(index, seed, scene, fr, rng)
            if sample is not None:
                return sample
        return self.staged(index)

    def staged(self, index: int) -> SimSample:
        """Sample ``index`` from a staged scene (see :meth:`_staged`): what ``ds[index]`` returns when its
        ``_RANDOM_DRAWS`` random scene draws all fail (``SimSample.staged`` is then True). Deterministic."""
        cfg = self.config
        base = SPLIT_SEED_BASE[self.split]
        sim = _sim()
        for k in range(_STAGED_TRIES):
            seed = base + index + (_RANDOM_DRAWS + k) * 200_003
            rng = np.random.default_rng([seed, 11])
            scene, T = self._staged(seed, rng, last_resort=k >= _STAGED_TRIES // 2)
            fr = sim.SimRenderer(scene, width=cfg.width, height=cfg.height, fov_deg=cfg.fov_deg).render(T)
            sample = self._annotate(index, seed, scene, fr, rng)
            if sample is not None:
                sample.staged = True
                log.debug("%s sample %d: staged scene (seed %d) after %d random draws", self.split, index, seed,
                          _RANDOM_DRAWS)
                return sample
        raise DataError(f"{self.split} sample {index}: no usable view after {_RANDOM_DRAWS} random scene draws "
                        f"and {_STAGED_TRIES} staged scenes (image {cfg.width}x{cfg.height}, "
                        f"min_pixels {cfg.min_pixels})")

    def _annotate(self, index, seed, scene, fr, rng) -> SimSample | None:
        cfg = self.config
        inst = fr.instance
        counts = np.bincount(inst.ravel(), minlength=len(scene.objects) + 1)
        T_cam_world = np.linalg.inv(fr.T_world_cam)
        objs, boxes = [], {}
        for o in scene.objects:
            if o.id >= counts.size or counts[o.id] < cfg.min_pixels:
                continue
            pc = T_cam_world[:3, :3] @ np.asarray(o.center, float) + T_cam_world[:3, 3]
            objs.append(ObjectInfo(id=int(o.id), category=o.category, colour=o.colour, size=o.size,
                                   pixels=int(counts[o.id]), center_cam=tuple(float(v) for v in pc)))
            boxes[o.id] = (np.asarray(o.box_min, float), np.asarray(o.box_max, float))
        if len(objs) < 2:
            return None
        rel = _relation_matrix(objs, boxes)
        referring = _referring(objs, rel, rng)
        if self.split == "heldout":
            referring = [r for r in referring if any(o.id == r.object_id and is_heldout_pair(o.category, o.colour) for o in objs)]
        if not referring:
            return None
        caption = _caption(objs)
        if cfg.p_synonym > 0:  # own generator: the rest of the sample is the same as with p_synonym = 0
            srng = np.random.default_rng([seed, 13])
            referring = [_paraphrased(r, srng, cfg.p_synonym) for r in referring]
            caption = paraphrase(caption, srng, cfg.p_synonym)
        by_id = {o.id: o for o in objs}
        n_ent = int(rng.integers(1, min(cfg.max_entities, len(referring)) + 1))
        chosen = [referring[i] for i in sorted(rng.choice(len(referring), size=n_ent, replace=False))]
        parts, visual, ref_index, refs, sources = [], [], [], [], []
        for r in chosen:
            o = by_id[r.object_id]
            use_vis = rng.random() < cfg.p_visual
            ref = self._reference(o.category, o.colour, int(rng.integers(cfg.ref_variants))) if use_vis else None
            if ref is not None:
                k = len(refs)
                refs.append((ref[0], ref[1]))
                sources.append((int(ref[2]), int(ref[3]), o.category, o.colour))
                parts.append(f"the <{k}>" + (f" {r.relation}" if r.relation else ""))
                visual.append(True)
                ref_index.append(k)
            else:
                parts.append(r.phrase)
                visual.append(False)
                ref_index.append(-1)
        il = Interleaved(text=", ".join(parts), object_ids=[r.object_id for r in chosen],
                         text_phrases=[r.phrase for r in chosen], visual=visual, ref_index=ref_index)
        return SimSample(split=self.split, index=index, seed=seed, image=np.ascontiguousarray(fr.color),
                         instance=inst.astype(np.uint8), objects=objs, referring=referring, interleaved=il,
                         caption=caption, references=refs, reference_sources=sources)

    def iter(self, start: int, stop: int) -> Iterator[SimSample]:
        for i in range(start, stop):
            yield self[i]


# ----------------------------------------------------------------------------- shard cache


def build_shards(*, split: str, n_samples: int, out_dir: str | Path, config: DataConfig | None = None,
                 shard_size: int = 256) -> Path:
    """Render ``n_samples`` of ``split`` into ``out_dir/<split>/shard_XXXXX.npz`` (skips shards already present).

    Each shard holds ``images`` (N,H,W,3) uint8, ``instance`` (N,H,W) uint8, ``refs`` (R,S,S,3) uint8,
    ``ref_masks`` (R,S,S) bool, ``ref_offsets`` (N+1,) int64 and ``meta`` (JSON per sample).
    """
    config = config or DataConfig()
    ds = SimFindDataset(split=split, config=config)
    d = Path(out_dir) / split
    d.mkdir(parents=True, exist_ok=True)
    # JSON-normal (tuples -> lists) so that it compares equal with what a previous run wrote
    info = json.loads(json.dumps({"split": split, "n_samples": n_samples, "shard_size": shard_size,
                                  "config": config.to_dict()}))
    info_path = d / "info.json"
    if info_path.exists():
        old = json.loads(info_path.read_text())
        try:  # fields added since the cache was built compare at their defaults
            old_cfg = json.loads(json.dumps(DataConfig.from_dict(old.get("config") or {}).to_dict()))
        except (TypeError, DataError):
            old_cfg = old.get("config")
        if old_cfg != info["config"] or old.get("shard_size") != shard_size:
            raise DataError(f"{d} was built with another config/shard size: {old}")
    info_path.write_text(json.dumps(info, indent=1))
    for s0 in range(0, n_samples, shard_size):
        path = d / f"shard_{s0 // shard_size:05d}.npz"
        if path.exists():
            continue
        samples = [ds[i] for i in range(s0, min(n_samples, s0 + shard_size))]
        refs = [r for s in samples for r in s.references]
        offs = np.cumsum([0] + [len(s.references) for s in samples]).astype(np.int64)
        S = config.ref_size
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(
            tmp,
            images=np.stack([s.image for s in samples]),
            instance=np.stack([s.instance for s in samples]),
            refs=np.stack([r[0] for r in refs]) if refs else np.zeros((0, S, S, 3), np.uint8),
            ref_masks=np.stack([r[1] for r in refs]) if refs else np.zeros((0, S, S), bool),
            ref_offsets=offs,
            meta=np.array([json.dumps(s.to_meta()) for s in samples]),
        )
        tmp.rename(path)
        log.info("wrote %s (%d samples)", path, len(samples))
    return d


class ShardDataset:
    """All samples of a shard directory in memory: ``len(ds)``, ``ds[i] -> SimSample``."""

    def __init__(self, *, directory: str | Path, limit: int | None = None) -> None:
        d = Path(directory)
        files = sorted(d.glob("shard_*.npz"))
        files = [f for f in files if not f.name.endswith(".tmp.npz")]
        if not files:
            raise DataError(f"no shard_*.npz files in {d}")
        self.images, self.instance, self.meta, self._refs = [], [], [], []
        for f in files:
            # read each array once (NpzFile decompresses on every item access); samples are views of them
            with np.load(f) as z:
                offs, refs, rmasks = z["ref_offsets"], z["refs"], z["ref_masks"]
                images, instance, meta = z["images"], z["instance"], z["meta"]
            for k, m in enumerate(meta):
                self.images.append(images[k])
                self.instance.append(instance[k])
                self.meta.append(json.loads(str(m)))
                self._refs.append([(refs[j], rmasks[j]) for j in range(offs[k], offs[k + 1])])
                if limit is not None and len(self.meta) >= limit:
                    break
            if limit is not None and len(self.meta) >= limit:
                break

    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, i: int) -> SimSample:
        return SimSample.from_meta(self.meta[i], self.images[i], self.instance[i], self._refs[i])
