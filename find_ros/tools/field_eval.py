"""Field queries against simulator ground truth: does a text query for each object rank a goal on it first?

``python -m find_ros.tools.field_eval [--model DIR | --embed hsv] --seeds 0-19 [--frames 60] [--voxel 0.05]
[--json F]``

Per scene (``Scene.generate(seed)``, >= 6 objects): fuse an orbit of ``frames`` rendered RGB-D frames with the
embedder's pixel embeddings (FIND, or the HSV colour baseline for reference), then for every object whose name is
unambiguous in the scene (``"the <colour> <category>"`` for FIND; ``"the <colour> object"`` for the colour
baseline, which knows no categories) query the field and count a hit when the first goal's centroid lies in the
object's box inflated by ``margin`` (10 cm). Objects hardly observed by the fused frames (fewer than 50 GT pixels
over all views) are reported and excluded. The field and the embedder never see the ground truth.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from find_ros.field.config import FieldConfig
from find_ros.field.grid import FeatureField

__all__ = ["evaluate_scene", "main", "parse_seeds"]

log = logging.getLogger(__name__)


def parse_seeds(spec: str) -> list[int]:
    """``"0-19"`` / ``"3,5,8"`` / ``"4"`` -> list of seeds."""
    out: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        if "-" in part[1:]:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    if not out:
        raise ValueError(f"no seed in {spec!r}")
    return out


def _names(objects, *, categories: bool) -> dict[int, str]:
    """Object id -> unambiguous query text (objects sharing a name are left out)."""
    key = (lambda o: (o.colour, o.category)) if categories else (lambda o: (o.colour,))
    keys = [key(o) for o in objects]
    out = {}
    for o, k in zip(objects, keys):
        if keys.count(k) == 1:
            out[o.id] = f"the {o.colour} {o.category}" if categories else f"the {o.colour} object"
    return out


def evaluate_scene(embedder, seed: int, *, frames: int = 60, width: int = 320, height: int = 240,
                   voxel: float = 0.05, margin: float = 0.10, categories: bool = True) -> dict:
    """Fuse one sim scene and query every unambiguously named object (see the module docstring)."""
    from find_ros.sim import Scene, SimRenderer, orbit_trajectory

    scene = Scene.generate(seed)
    renderer = SimRenderer(scene, width=width, height=height, seed=seed)
    ff = FeatureField(config=FieldConfig(voxel_size=voxel, embedding_dim=embedder.dim, max_blocks=20000))
    seen: dict[int, int] = {}
    t_fuse = []
    for i, T in enumerate(orbit_trajectory(scene, frames)):
        f = renderer.render(T, index=i)
        ids, counts = np.unique(f.instance, return_counts=True)
        for k, c in zip(ids.tolist(), counts.tolist()):
            seen[k] = seen.get(k, 0) + c
        pe = embedder.pixel_embeddings(f.color)
        t0 = time.perf_counter()
        ff.integrate(f.depth.astype(np.float32), f.K, T, pixel_embeddings=pe, color=f.color)
        t_fuse.append((time.perf_counter() - t0) * 1e3)
    names = _names(scene.objects, categories=categories)
    rows = []
    for o in scene.objects:
        if o.id not in names:
            continue
        if seen.get(o.id, 0) < 50:
            rows.append({"id": o.id, "query": names[o.id], "observed": False})
            continue
        r = ff.query(embedder.embed_text(names[o.id]), max_goals=3)
        lo = np.asarray(o.box_min) - margin
        hi = np.asarray(o.box_max) + margin
        g = r.goals[0] if r.goals else None
        hit = g is not None and bool(np.all(g.position >= lo) and np.all(g.position <= hi))
        rows.append({"id": o.id, "query": names[o.id], "observed": True, "hit": hit,
                     "goal": None if g is None else [round(float(v), 3) for v in g.position],
                     "goal_score": None if g is None else round(g.score, 4),
                     "box_min": [round(float(v), 3) for v in o.box_min],
                     "box_max": [round(float(v), 3) for v in o.box_max]})
    obs = [r for r in rows if r["observed"]]
    return {"seed": seed, "objects": len(scene.objects), "queried": len(obs),
            "hits": sum(r["hit"] for r in obs), "unobserved": len(rows) - len(obs),
            "voxels": ff.num_voxels, "fuse_ms_median": float(np.median(t_fuse)), "rows": rows}


def _embedder(model: str | None, embed: str):
    from find_ros.field.embedder import FieldEmbedder

    if embed == "hsv":
        from find_ros.grounding.baseline import HsvBaselineGrounder

        return FieldEmbedder(grounder=HsvBaselineGrounder()), "hsv-baseline (colour only: BASELINE, not FIND)"
    from find_ros.model.grounder import DEFAULT_MODEL_DIR, FindGrounder

    path = DEFAULT_MODEL_DIR if model in (None, "default") else Path(model)
    if not Path(path).is_dir():
        raise SystemExit(f"no FIND model directory at {path}")
    return FieldEmbedder(grounder=FindGrounder.from_pretrained(path, device="cpu")), f"FIND ({path})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m find_ros.tools.field_eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="FIND model directory (default: the shipped model)")
    ap.add_argument("--embed", choices=("find", "hsv"), default="find")
    ap.add_argument("--seeds", default="0-19", help="scene seeds: 0-19, 3,5,8")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--voxel", type=float, default=0.05)
    ap.add_argument("--margin", type=float, default=0.10, help="box inflation (m) of a hit")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if a.embed == "find":
        import torch

        torch.set_num_threads(1)  # a small model: one thread is fastest, and immune to a busy second core
    emb, what = _embedder(a.model, a.embed)
    scenes = []
    for s in parse_seeds(a.seeds):
        r = evaluate_scene(emb, s, frames=a.frames, width=a.width, height=a.height, voxel=a.voxel,
                           margin=a.margin, categories=a.embed == "find")
        scenes.append(r)
        print(f"seed {s}: {r['hits']}/{r['queried']} first goals on the object"
              f" ({r['unobserved']} unobserved), fuse {r['fuse_ms_median']:.1f} ms", flush=True)
    q = sum(r["queried"] for r in scenes)
    h = sum(r["hits"] for r in scenes)
    summary = {"embedding": what, "scenes": len(scenes), "objects_queried": q, "hits": h,
               "hit_rate": h / q if q else None, "frames": a.frames, "voxel": a.voxel, "margin": a.margin}
    print(json.dumps(summary))
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"summary": summary, "scenes": scenes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
