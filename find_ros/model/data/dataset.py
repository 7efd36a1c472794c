"""The sim FIND-Bench dataset: ``SimFindDataset(split=...)[i]`` renders and annotates one view of a sim scene.

A sample tries up to 20 random scene draws; heldout draws only *allow* a held-out pair and look from a random
side, so about 70 % of them show no held-out target and about 1 sample in 1700 failed all 20 (``find-ros eval
--split heldout --seed 918273`` crashed on sample 9182730058). When every draw fails, the sample comes from a
*staged* scene instead (:meth:`SimFindDataset.staged`: the target in a short row of other categories, seen
from the side; ``SimSample.staged`` is True), so every index yields a sample. Everything is deterministic by
(split, index).
"""
from __future__ import annotations

import logging
from typing import Iterator

import cv2
import numpy as np

from find_ros.model.data.grammar import (make_caption, paraphrase, paraphrase_referring, referring_phrases,
                                         relation_matrix)
from find_ros.model.data.samples import DataConfig, DataError, Interleaved, ObjectInfo, SimSample
from find_ros.model.data.splits import REF_SEED_OFFSET, SPLIT_SEED_BASE, heldout_pairs, is_heldout_pair

log = logging.getLogger(__name__)

_RANDOM_DRAWS = 20
"""Random scene draws per sample before the staged fallback (:meth:`SimFindDataset.staged`)."""
_STAGED_TRIES = 8
"""Staged scenes tried after the random draws (the second half: a large target and one other large object)."""
_FOOTPRINTS: dict[tuple[str, str], float] = {}


def _sim():
    import find_ros.sim as sim  # deferred: see find_ros.model.data.splits

    return sim


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
            pairs = sorted(heldout_pairs())
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
        base = SPLIT_SEED_BASE[self.split] + REF_SEED_OFFSET
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
            pairs = sorted(heldout_pairs())
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
        rel = relation_matrix(objs, boxes)
        referring = referring_phrases(objs, rel, rng)
        if self.split == "heldout":
            referring = [r for r in referring if any(o.id == r.object_id and is_heldout_pair(o.category, o.colour) for o in objs)]
        if not referring:
            return None
        caption = make_caption(objs)
        if cfg.p_synonym > 0:  # own generator: the rest of the sample is the same as with p_synonym = 0
            srng = np.random.default_rng([seed, 13])
            referring = [paraphrase_referring(r, srng, cfg.p_synonym) for r in referring]
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
