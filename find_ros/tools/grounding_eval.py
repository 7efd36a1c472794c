"""Video grounding against simulator ground truth: target position error, track ids, lost / re-acquired.

``python -m find_ros.tools.grounding_eval --grounder hsv-baseline|find [--model DIR] --seed S --frames 300
[--trajectory walk|orbit] --json F``

Renders a :mod:`find_ros.sim` scene with >= 6 objects along a trajectory, grounds an instruction naming one
object through :class:`~find_ros.grounding.pipeline.VideoGrounder` and compares with the ground truth (the
grounder never sees it). For the colour baseline the target is an object whose colour is unique in the scene
(and not one of the colours that shading makes ambiguous when another is present). The published world
position (the track's multi-view centre, see :mod:`find_ros.grounding.tracking`) is compared with the GT box
centre and with the robust centre of the GT visible points of the frame (instance mask + depth); the latter
is biased toward the camera by about half the object's depth, so it says how far the estimate moved off the
visible surface rather than how good it is.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from find_ros.grounding.geometry import backproject, robust_centre
from find_ros.grounding.pipeline import PipelineConfig, VideoGrounder
from find_ros.instruction import parse_instruction

__all__ = ["EvalConfig", "pick_target", "run", "main"]

log = logging.getLogger(__name__)

_RELIABLE = ("red", "green", "blue", "yellow", "purple", "cyan", "pink")
"""Colours the baseline labels reliably under sim shading (orange/brown and white/grey share V ranges)."""


@dataclasses.dataclass
class EvalConfig:
    """One evaluation run."""

    grounder: str = "hsv-baseline"
    """``"hsv-baseline"`` or ``"find"``."""
    model: str | None = None
    """FIND model directory (``find`` only; default: the model shipped with the package)."""
    seed: int = 0
    """Scene seed (the scene has ``min_objects``..10 objects)."""
    frames: int = 300
    """Trajectory length."""
    trajectory: str = "walk"
    """``"walk"`` (walk-through, objects come and go) or ``"orbit"``."""
    width: int = 640
    height: int = 480
    min_objects: int = 6
    """Fewest objects in the scene."""
    min_visible_px: int = 300
    """A frame counts as "target in view" when the target covers at least this many pixels."""
    noise_std: float = 0.0
    """Depth noise (m) of the renderer."""
    invalid_depth: bool = False
    """Realistic invalid-depth regions in the renderer."""


def pick_target(objects, *, baseline: bool):
    """The object to name: for the baseline one whose colour is unique in the scene (reliable colours
    first, largest object first); for FIND the largest object whose description is unique."""
    def vol(o):
        return float(np.prod(np.subtract(o.box_max, o.box_min)))

    if baseline:
        colours = [o.colour for o in objects]
        unique = [o for o in objects if colours.count(o.colour) == 1]
        reliable = [o for o in unique if o.colour in _RELIABLE]
        cands = reliable or unique
    else:
        descs = [(o.colour, o.category) for o in objects]
        cands = [o for o in objects if descs.count((o.colour, o.category)) == 1]
    if not cands:
        return None
    return max(cands, key=vol)


def _build_grounder(cfg: EvalConfig):
    if cfg.grounder == "hsv-baseline":
        from find_ros.grounding.baseline import HsvBaselineGrounder

        return HsvBaselineGrounder()
    if cfg.grounder == "find":
        from find_ros.model.grounder import DEFAULT_MODEL_DIR, FindGrounder

        return FindGrounder.from_pretrained(Path(cfg.model) if cfg.model else DEFAULT_MODEL_DIR, device="cpu")
    raise ValueError(f"grounder must be 'hsv-baseline' or 'find', got {cfg.grounder!r}")


def _median(xs) -> float | None:
    return float(np.median(xs)) if len(xs) else None


def _pct(xs, q) -> float | None:
    return float(np.percentile(xs, q)) if len(xs) else None


@dataclasses.dataclass
class _Tally:
    """Per-frame figures of one run, accumulated by :meth:`add`."""

    centre: np.ndarray
    in_view: int = 0
    found_in_view: int = 0
    found_out_of_view: int = 0
    err_centre: list[float] = dataclasses.field(default_factory=list)
    err_visible: list[float] = dataclasses.field(default_factory=list)
    err_track: list[float] = dataclasses.field(default_factory=list)
    ious: list[float] = dataclasses.field(default_factory=list)
    ids_in_view: list[int] = dataclasses.field(default_factory=list)
    id_changes: int = 0
    prev_id: int | None = None
    ms: list[float] = dataclasses.field(default_factory=list)

    def add(self, *, frame, entity, gt: np.ndarray, visible: bool, track_centre) -> None:
        """Count one grounded frame: ``entity`` (the target's) against the ground-truth mask ``gt``."""
        if visible:
            self.in_view += 1
        if not entity.found:
            return
        if not visible:
            self.found_out_of_view += 1
            return
        self.found_in_view += 1
        self.ious.append(float((entity.mask & gt).sum() / max((entity.mask | gt).sum(), 1)))
        if entity.track_id is not None:
            self.ids_in_view.append(entity.track_id)
            if self.prev_id is not None and entity.track_id != self.prev_id:
                self.id_changes += 1
            self.prev_id = entity.track_id
        if entity.pose_world is None:
            return
        p = entity.pose_world.position
        self.err_centre.append(float(np.linalg.norm(p - self.centre)))
        pts = backproject(frame.depth, frame.K, gt)
        if len(pts) >= 10:
            vis_c, _ = robust_centre(pts @ frame.T_world_cam[:3, :3].T + frame.T_world_cam[:3, 3])
            self.err_visible.append(float(np.linalg.norm(p - vis_c)))
        tp = track_centre()
        if tp is not None:
            self.err_track.append(float(np.linalg.norm(tp - self.centre)))


def _report(cfg: EvalConfig, *, vg: VideoGrounder, scene, target, text: str, n_frames: int, t: _Tally) -> dict:
    """The report dict of one run."""
    tr = vg.trackers[0]
    size = np.subtract(target.box_max, target.box_min)
    return {
        "grounder": getattr(vg.grounder, "name", cfg.grounder),
        "seed": cfg.seed, "trajectory": cfg.trajectory, "frames": n_frames,
        "resolution": [cfg.width, cfg.height],
        "scene_objects": [o.describe() for o in scene.objects],
        "instruction": text, "target": {"id": target.id, "description": target.describe(),
                                        "center": t.centre.tolist(), "size": size.tolist()},
        "frames_in_view": t.in_view, "frames_found_in_view": t.found_in_view,
        "recall_in_view": t.found_in_view / t.in_view if t.in_view else None,
        "frames_found_out_of_view": t.found_out_of_view,
        "mask_iou_median": _median(t.ious),
        "position_error_vs_centre_m": {"median": _median(t.err_centre), "p90": _pct(t.err_centre, 90),
                                       "n": len(t.err_centre)},
        "position_error_vs_visible_m": {"median": _median(t.err_visible), "p90": _pct(t.err_visible, 90),
                                        "n": len(t.err_visible)},
        "track_position_error_vs_centre_m": {"median": _median(t.err_track), "final": t.err_track[-1]
                                             if t.err_track else None},
        "distinct_track_ids_in_view": len(set(t.ids_in_view)), "track_id_changes_in_view": t.id_changes,
        "tracks_started": tr.tracks_started, "lost": tr.losses, "reacquired": tr.reacquisitions,
        "switches": tr.switches,
        "pipeline_ms_median": _median(t.ms), "pipeline_ms_p95": _pct(t.ms, 95),
        "config": dataclasses.asdict(vg.config),
    }


def run(cfg: EvalConfig, pipeline_config: PipelineConfig | None = None) -> dict:
    """Run one evaluation and return its report (a JSON-able dict)."""
    from find_ros.sim import Scene, SimRenderer, orbit_trajectory, walkthrough_trajectory

    if cfg.trajectory not in ("walk", "orbit"):
        raise ValueError(f"trajectory must be 'walk' or 'orbit', got {cfg.trajectory!r}")
    scene = Scene.generate(cfg.seed, n_objects=(cfg.min_objects, max(cfg.min_objects, 10)))
    baseline = cfg.grounder == "hsv-baseline"
    target = pick_target(scene.objects, baseline=baseline)
    if target is None:
        raise RuntimeError(f"seed {cfg.seed}: no object can be named unambiguously: "
                           f"{[o.describe() for o in scene.objects]}")
    text = f"the {target.colour} {target.category}"
    renderer = SimRenderer(scene, width=cfg.width, height=cfg.height, noise_std=cfg.noise_std,
                           invalid_depth=cfg.invalid_depth, seed=cfg.seed)
    poses = (walkthrough_trajectory(scene, cfg.frames, seed=cfg.seed) if cfg.trajectory == "walk"
             else orbit_trajectory(scene, cfg.frames))
    vg = VideoGrounder(_build_grounder(cfg), config=pipeline_config or PipelineConfig())
    vg.set_instruction(parse_instruction(text, id="sim-eval"))
    tally = _Tally(centre=np.asarray(target.center, dtype=np.float64))
    for i, T in enumerate(poses):
        f = renderer.render(T, index=i)
        gt = f.instance == target.id
        t0 = time.perf_counter()
        res = vg.process(f.color, f.depth, f.K, f.T_world_cam)
        tally.ms.append((time.perf_counter() - t0) * 1e3)
        tally.add(frame=f, entity=res.entities[0], gt=gt, visible=int(gt.sum()) >= cfg.min_visible_px,
                  track_centre=lambda: vg.trackers[0].centre)
    return _report(cfg, vg=vg, scene=scene, target=target, text=text, n_frames=len(poses), t=tally)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m find_ros.tools.grounding_eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--grounder", choices=("hsv-baseline", "find"), default="hsv-baseline")
    ap.add_argument("--model", default=None, help="FIND model directory (grounder find)")
    ap.add_argument("--seed", type=int, default=0, nargs="+", help="scene seed(s)")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--trajectory", choices=("walk", "orbit"), default="walk")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--noise-std", type=float, default=0.0, help="depth noise (m)")
    ap.add_argument("--invalid-depth", action="store_true", help="realistic invalid depth regions")
    ap.add_argument("--json", type=Path, default=None, help="write the report here")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    seeds = a.seed if isinstance(a.seed, list) else [a.seed]
    reports = []
    for s in seeds:
        cfg = EvalConfig(grounder=a.grounder, model=a.model, seed=s, frames=a.frames, trajectory=a.trajectory,
                         width=a.width, height=a.height, noise_std=a.noise_std, invalid_depth=a.invalid_depth)
        try:
            r = run(cfg)
        except RuntimeError as e:
            print(f"seed {s}: skipped: {e}", file=sys.stderr)
            continue
        reports.append(r)
        ec, ev = r["position_error_vs_centre_m"], r["position_error_vs_visible_m"]
        fmt = (lambda x: "n/a" if x is None else f"{100 * x:.1f} cm")
        print(f"seed {s} {r['trajectory']} {r['instruction']!r}: in view {r['frames_in_view']}/{r['frames']}, "
              f"found {r['frames_found_in_view']} (+{r['frames_found_out_of_view']} out of view), "
              f"IoU {r['mask_iou_median'] or 0:.2f}, error vs centre {fmt(ec['median'])} "
              f"(p90 {fmt(ec['p90'])}), vs visible {fmt(ev['median'])}, ids in view "
              f"{r['distinct_track_ids_in_view']}, lost {r['lost']}, re-acquired {r['reacquired']}, "
              f"{r['pipeline_ms_median']:.1f} ms/frame")
    out = reports[0] if len(reports) == 1 else {"runs": reports}
    if len(reports) > 1:
        def agg(key, sub="median"):
            xs = [r[key][sub] for r in reports if r[key][sub] is not None]
            return _median(xs)

        out["summary"] = {
            "runs": len(reports),
            "median_of_median_error_vs_centre_m": agg("position_error_vs_centre_m"),
            "median_of_median_error_vs_visible_m": agg("position_error_vs_visible_m"),
            "runs_with_one_track_id_in_view": sum(r["distinct_track_ids_in_view"] <= 1 for r in reports),
            "median_recall_in_view": _median([r["recall_in_view"] for r in reports if r["recall_in_view"] is not None]),
        }
        print(json.dumps(out["summary"]))
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2))
    return 0 if reports else 1


if __name__ == "__main__":
    sys.exit(main())
