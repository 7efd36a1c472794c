"""The referring grammar of the sim data: which relations hold between visible objects (from ground-truth
geometry in the camera frame), the shortest phrase that singles an object out ("the red cube left of the blue
torus"), captions, synonym paraphrases, and the vocabulary all of them use."""
from __future__ import annotations

import numpy as np

from find_ros.model.data.samples import ObjectInfo, Referring

RELATIONS = ("left of", "right of", "in front of", "behind", "on")
_FILLER = ("the", "a", "an", "and", "of", "left", "right", "in", "front", "behind", "on", "find", "with")


def vocabulary() -> list[str]:
    """Every word the generated phrases and captions use (for word-level tokenizers)."""
    import find_ros.sim as sim  # deferred: see find_ros.model.data.splits
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


def relation_matrix(objs: list[ObjectInfo],
                    boxes: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
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


def referring_phrases(objs: list[ObjectInfo], rel: dict[str, np.ndarray],
                      rng: np.random.Generator) -> list[Referring]:
    """A referring phrase for each object that one singles out (attributes, plus a relation to a uniquely
    described anchor when needed or, at random, 30 % of the time); objects none singles out are skipped."""
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


def paraphrase_referring(r: Referring, rng: np.random.Generator, p: float) -> Referring:
    """``r`` with its attributes and relation paraphrased (see :func:`paraphrase`)."""
    attrs = paraphrase(r.attributes, rng, p)
    relation = paraphrase(r.relation, rng, p) if r.relation else None
    return Referring(object_id=r.object_id, phrase=f"the {attrs}" + (f" {relation}" if relation else ""),
                     attributes=attrs, relation=relation)


def make_caption(objs: list[ObjectInfo]) -> str:
    """The objects named left to right ("a small red cube and a large blue torus")."""
    order = sorted(objs, key=lambda o: o.center_cam[0] / max(o.center_cam[2], 1e-3))
    names = [f"a {o.size} {o.colour} {o.category}" for o in order]
    if len(names) == 1:
        return names[0]
    return " ".join(names[:-1]) + " and " + names[-1]
