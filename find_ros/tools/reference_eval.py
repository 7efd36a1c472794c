"""Click-to-reference, measured end to end over real DDS: sim frames -> perception node -> clicks -> "the <name>".

For each scene (``Scene.generate(seed)``, 640x480, an orbit of ``n_views`` poses) the evaluation publishes frames with
their camera poses to an in-process :class:`~find_ros.ros.perception_node.PerceptionNode` (FIND grounder, field on),
through an in-process camera node, over the DDS of a private domain, and:

1. **Clicks.** In the first view, for every object whose visible area is at least ``min_area`` pixels, a 3D click at
   the surface point under the object's deepest interior pixel (from the ground-truth instance mask and depth)
   goes to ``find/reference/add`` (``SOURCE_POINT``, world frame); the stored reference's mask (full resolution,
   placed at its box) is compared with the object's instance mask. The
   same for a pixel click (``SOURCE_PIXEL``), whose reference is then removed.
2. **"the <name>".** For each object clicked, ``find/set_instruction`` with ``"the <name>"``, then the later views
   ``ground_views`` (other viewpoints along the orbit): the mask IoU on ``find/mask`` against the object's instance
   mask in every view where it is visible (>= ``min_visible`` pixels), and the distance of the entity's world
   position (``find/grounding``) to the object's centre, at the last view where it is found; next to it, the oracle
   of the same views: the robust box centre of the object's visible surface from its ground-truth masks (partly
   hidden objects cannot be centred to 5 cm from what the camera sees, whatever the masks).
3. **Field query.** ``find/field/query`` with ``"the <name>"``: is the first goal on the object (inside its box grown
   by ``goal_margin_m``)?
4. **Bad clicks.** A click outside the image, on the floor, with a stale and a future stamp, in an unknown frame,
   off the visible surface, with a duplicate and an oversize name: each must be refused and store nothing.

``find-ros reference-eval --seeds 600-609 --json out/reference_eval.json``; figures in README.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from find_ros.grounding.geometry import backproject

if TYPE_CHECKING:
    from find_ros.tools.reference_rig import ReferenceRig

__all__ = ["EvalConfig", "run", "main"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EvalConfig:
    seeds: tuple[int, ...] = tuple(range(600, 610))
    """Scenes (``Scene.generate(seed)``); 600+ were never used to develop the click method (0-19 were)."""
    width: int = 640
    height: int = 480
    n_views: int = 48
    """Orbit length: view 0 is clicked, ``ground_views`` are the later viewpoints."""
    ground_views: tuple[int, ...] = tuple(range(3, 48, 3))
    """Views after the click (every third pose of the orbit: the object is seen from all around)."""
    min_area: int = 1500
    """Objects with at least this many visible pixels in view 0 are clicked."""
    min_visible: int = 500
    """A later view counts for an object when it shows at least this many of its pixels."""
    goal_margin_m: float = 0.05
    max_objects_per_scene: int = 6
    field: bool = True
    model_path: str = ""
    frame_timeout_s: float = 20.0


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 0.0


def _deepest_pixel(mask: np.ndarray) -> tuple[int, int]:
    dt = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    v, u = np.unravel_index(int(np.argmax(dt)), dt.shape)
    return int(u), int(v)


def _reference_iou(node, name: str, instance_mask: np.ndarray) -> float:
    """IoU of the stored reference ``name`` (its full-resolution crop mask placed at its box in the source frame) with
    an instance mask of that frame. Read from the store of the node this evaluation drives in-process (the service
    answer carries a thumbnail only)."""
    ref = node._refs.store.get(name)  # noqa: SLF001 - in-process evaluation of the node it drives
    x0, y0, x1, y1 = ref.box
    full = np.zeros(instance_mask.shape, bool)
    full[y0:y1, x0:x1] = ref.mask if ref.mask is not None else True
    return _iou(full, instance_mask)


def _camera_point(f, u: int, v: int) -> np.ndarray:
    """The surface point (camera frame) under the centre of pixel (u, v)."""
    z = float(f.depth[v, u])
    return np.array([(u + 0.5 - f.K[0, 2]) * z / f.K[0, 0], (v + 0.5 - f.K[1, 2]) * z / f.K[1, 1], z])


def _to_world(f, pc: np.ndarray) -> np.ndarray:
    return f.T_world_cam[:3, :3] @ pc + f.T_world_cam[:3, 3]


@dataclasses.dataclass
class _Totals:
    """Figures over every scene, for the summary."""

    point: list[float] = dataclasses.field(default_factory=list)
    pixel: list[float] = dataclasses.field(default_factory=list)
    ground: list[float] = dataclasses.field(default_factory=list)
    pos: list[float] = dataclasses.field(default_factory=list)
    oracle: list[float] = dataclasses.field(default_factory=list)
    goals_ok: int = 0
    goals_n: int = 0


def run(cfg: EvalConfig) -> dict:
    """The evaluation (see the module docstring); returns the report dict. Does not touch ``os.environ``."""
    from find_ros.tools.reference_rig import ReferenceRig

    t0 = time.monotonic()
    with ReferenceRig(frame_timeout_s=cfg.frame_timeout_s) as rig:
        report: dict[str, Any] = {"config": dataclasses.asdict(cfg), "scenes": []}
        rig.start(field=cfg.field, model_path=cfg.model_path)
        totals = _Totals()
        for seed in cfg.seeds:
            scene, views = _render_scene(cfg, seed=seed)
            scene_rep = _measure_scene(rig, cfg, seed=seed, scene=scene, views=views, totals=totals)
            report["scenes"].append(scene_rep)
            log.info("seed %d: %s", seed, [(o["object"], round(o["point_iou"], 2), o.get("ground_miou"))
                                           for o in scene_rep["objects"]])
        report["bad_clicks"] = _bad_clicks(rig, views=views, cfg=cfg)
        report["summary"] = _summary(cfg, totals=totals, bad_clicks=report["bad_clicks"],
                                     model=rig.counters().get("model", ""), wall_s=round(time.monotonic() - t0, 1))
        return report


def _render_scene(cfg: EvalConfig, *, seed: int) -> tuple[Any, dict[int, Any]]:
    """The scene of ``seed`` and its rendered views: 0 (clicked) and ``ground_views``."""
    from find_ros.sim import Scene, SimRenderer, orbit_trajectory

    scene = Scene.generate(seed)
    renderer = SimRenderer(scene, width=cfg.width, height=cfg.height)
    poses = orbit_trajectory(scene, cfg.n_views)
    return scene, {i: renderer.render(poses[i], index=i) for i in sorted({0, *cfg.ground_views})}


def _measure_scene(rig: ReferenceRig, cfg: EvalConfig, *, seed: int, scene: Any, views: dict[int, Any],
                   totals: _Totals) -> dict:
    """One scene: clicks in view 0, then "the <name>" (and the field query) for each object clicked."""
    f0 = views[0]
    if cfg.field:  # every scene is built around the same origin: start from an empty field
        rig.clear_field()
    rig.publish(f0, wait_output=False)
    rig.publish(f0, wait_output=False)  # the pose of the newest frame is in the buffer by now
    ids, areas = np.unique(f0.instance, return_counts=True)
    objs = [(int(i), int(a)) for i, a in zip(ids, areas) if i != 0 and a >= cfg.min_area]
    objs = sorted(objs, key=lambda x: -x[1])[:cfg.max_objects_per_scene]
    scene_rep = {"seed": seed, "objects": [_click(rig, seed=seed, scene=scene, f0=f0, oid=oid, area=area,
                                                  totals=totals) for oid, area in objs]}
    for o in scene_rep["objects"]:  # "the <name>" in later views
        if o["point_ok"]:
            _name_object(rig, cfg, o=o, name=f"s{seed}o{o['id']}", scene=scene, views=views, totals=totals)
    return scene_rep


def _click(rig: ReferenceRig, *, seed: int, scene: Any, f0: Any, oid: int, area: int, totals: _Totals) -> dict:
    """A 3D click and a pixel click under the object's deepest pixel; the pixel click's reference is removed."""
    gt = f0.instance == oid
    u, v = _deepest_pixel(gt)
    pw = _to_world(f0, _camera_point(f0, u, v))
    name = f"s{seed}o{oid}"
    r = rig.call("add", rig.point_request(pw, name=name))
    o = {"id": oid, "object": scene.object(oid).describe(), "area": area, "point_ok": bool(r.success),
         "point_message": r.message}
    o["point_iou"] = _reference_iou(rig.node, name, gt) if r.success else 0.0
    totals.point.append(o["point_iou"])
    r2 = rig.call("add", rig.pixel_request(u, v, name=name + "px"))
    o["pixel_iou"] = _reference_iou(rig.node, name + "px", gt) if r2.success else 0.0
    totals.pixel.append(o["pixel_iou"])
    if r2.success:
        rig.remove(name + "px")
    return o


def _name_object(rig: ReferenceRig, cfg: EvalConfig, *, o: dict, name: str, scene: Any, views: dict[int, Any],
                 totals: _Totals) -> None:
    """Ground "the <name>" over the later views, then (field on) query the field; figures go into ``o``."""
    r = rig.set_instruction(f"the <{name}>")
    if not r.success:
        o["ground_message"] = r.message
        return
    _ground_views(rig, cfg, o=o, centre=np.asarray(scene.object(o["id"]).center, dtype=float), views=views,
                  totals=totals)
    if cfg.field:
        _field_goal(rig, cfg, o=o, name=name, obj=scene.object(o["id"]), totals=totals)


def _ground_views(rig: ReferenceRig, cfg: EvalConfig, *, o: dict, centre: np.ndarray, views: dict[int, Any],
                  totals: _Totals) -> None:
    """Mask IoU per view where the object is visible, the position error per view and at the last one found, and
    the oracle: the robust (5..95 %) box centre of the object's visible surface in the same views."""
    ious, last_pos, seen, view_errors = [], None, [], []
    for i in cfg.ground_views:
        f = views[i]
        s = rig.publish(f, wait_output=True)
        gt = f.instance == o["id"]
        visible = gt.sum() >= cfg.min_visible
        if visible:  # the oracle: ground-truth masks of the same views
            seen.append(backproject(f.depth, f.K, gt) @ f.T_world_cam[:3, :3].T + f.T_world_cam[:3, 3])
        g, label = rig.output(s)
        e = g.entities[0] if g.entities else None
        if visible:
            ious.append(_iou(label == 1, gt))
        if e is not None and e.found and e.world_pose_valid:
            p = e.world_pose.pose.position
            last_pos = np.array([p.x, p.y, p.z])
            view_errors.append(round(float(np.linalg.norm(last_pos - centre)), 3))
        else:
            view_errors.append(None)
    o["ground_ious"] = [round(x, 3) for x in ious]
    o["ground_miou"] = float(np.mean(ious)) if ious else None
    totals.ground.extend(ious)
    o["view_position_errors_m"] = view_errors
    o["position_error_m"] = float(np.linalg.norm(last_pos - centre)) if last_pos is not None else None
    if o["position_error_m"] is not None:
        totals.pos.append(o["position_error_m"])
    if seen:  # what these views allow: the robust (5..95 %) box centre of the object's visible surface
        P = np.concatenate(seen)
        oracle = (np.percentile(P, 5, axis=0) + np.percentile(P, 95, axis=0)) / 2
        o["oracle_position_error_m"] = float(np.linalg.norm(oracle - centre))
        totals.oracle.append(o["oracle_position_error_m"])


def _field_goal(rig: ReferenceRig, cfg: EvalConfig, *, o: dict, name: str, obj: Any, totals: _Totals) -> None:
    """``find/field/query`` "the <name>": is the first goal inside the object's box grown by ``goal_margin_m``?"""
    q = rig.query_field(f"the <{name}>")
    lo, hi = np.asarray(obj.box_min) - cfg.goal_margin_m, np.asarray(obj.box_max) + cfg.goal_margin_m
    ok = bool(q.success and q.goals)
    gv = None
    if ok:
        gp = q.goals[0].pose.position
        gv = np.array([gp.x, gp.y, gp.z])
        ok = bool(np.all(gv >= lo) and np.all(gv <= hi))
    o["field_goal_on_object"] = ok
    o["field_message"] = q.message
    o["field_goal"] = [round(float(v), 3) for v in gv] if q.success and q.goals else None
    o["box"] = [np.round(lo, 3).tolist(), np.round(hi, 3).tolist()]
    totals.goals_ok += ok
    totals.goals_n += 1


def _summary(cfg: EvalConfig, *, totals: _Totals, bad_clicks: list[dict], model: str, wall_s: float) -> dict:
    """The report's summary figures."""
    t = totals
    return {
        "objects": len(t.point), "scenes": len(cfg.seeds),
        "point_click_mean_iou": float(np.mean(t.point)) if t.point else None,
        "point_click_median_iou": float(np.median(t.point)) if t.point else None,
        "pixel_click_mean_iou": float(np.mean(t.pixel)) if t.pixel else None,
        "ground_views": len(t.ground),
        "ground_mean_iou": float(np.mean(t.ground)) if t.ground else None,
        "position_error_median_m": float(np.median(t.pos)) if t.pos else None,
        "position_within_5cm": f"{sum(p <= 0.05 for p in t.pos)}/{len(t.pos)}",
        "oracle_position_error_median_m": float(np.median(t.oracle)) if t.oracle else None,
        "oracle_position_within_5cm": f"{sum(p <= 0.05 for p in t.oracle)}/{len(t.oracle)}",
        "field_goal_on_object": f"{t.goals_ok}/{t.goals_n}",
        "bad_clicks_refused": f"{sum(_refused_cleanly(b) for b in bad_clicks)}/{len(bad_clicks)}",
        "model": model,
        "wall_s": wall_s,
    }


def _bad_click_cases(rig: ReferenceRig, f: Any, cfg: EvalConfig) -> tuple[list[tuple[str, Any, str]], int, int]:
    """(what, request, kind the refusal must name) for each bad click on frame ``f``, and the control pixel."""
    H, W = f.depth.shape
    floor = cv2.erode((f.instance == 0).astype(np.uint8), np.ones((41, 41), np.uint8)) > 0
    ys, xs = np.nonzero(floor[H // 2:])
    fu, fv = int(xs[len(xs) // 2]), int(ys[len(ys) // 2]) + H // 2
    objs = [i for i in np.unique(f.instance) if i != 0 and (f.instance == i).sum() >= cfg.min_area]
    u, v = _deepest_pixel(f.instance == objs[0])
    pc = _camera_point(f, u, v)
    pw = _to_world(f, pc)
    behind = _to_world(f, pc * 0.5)  # half-way to the camera: free space
    newest = _newest_stamp(rig.node)
    pixel, point = rig.pixel_request, rig.point_request
    cases = [("outside the image", pixel(W + 10, 5), "outside_image"),
             ("on the floor", pixel(fu, fv), "no_object"),
             ("stale stamp", pixel(u, v, stamp_ns=newest + int(-30.0 * 1e9)), "stale_stamp"),
             ("future stamp", pixel(u, v, stamp_ns=newest + int(30.0 * 1e9)), "future_stamp"),
             ("unknown frame", point(pw, frame="base_link"), "unknown_frame"),
             ("off the visible surface", point(behind), "occluded"),
             ("oversize name", pixel(u, v, name="x" * 100), "BadReferenceName"),
             ("bad name", pixel(u, v, name="my mug"), "BadReferenceName")]
    return cases, u, v


def _bad_clicks(rig: ReferenceRig, *, views: dict[int, Any], cfg: EvalConfig) -> list[dict]:
    """Each bad click: refused (success false, a message naming the problem) and nothing stored."""
    f = views[0]
    rig.publish(f, wait_output=False)
    rig.publish(f, wait_output=False)
    cases, u, v = _bad_click_cases(rig, f, cfg)
    first = rig.call("add", rig.pixel_request(u, v, name="dupe"))
    cases.append(("duplicate name", rig.pixel_request(u, v, name="dupe"), "DuplicateReferenceName"))
    out = []
    for what, req, kind in cases:
        before = rig.counters().get("references", 0)
        r = rig.call("add", req)
        after = rig.counters().get("references", 0)
        out.append({"case": what, "refused": not r.success, "kind_named": kind in r.message,
                    "stored_nothing": after == before, "message": r.message})
    if not first.success:  # the control: the same click, well named, must be stored
        raise RuntimeError(f"the control click was refused: {first.message}")
    return out


def _refused_cleanly(b: dict) -> bool:
    return bool(b["refused"] and b["stored_nothing"] and b["kind_named"])


def _newest_stamp(node) -> int:
    frames = list(node._refs._frames)  # noqa: SLF001 - the evaluation reads the node it drives in-process
    return frames[-1].stamp_ns if frames else 0


def _parse_seeds(text: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part.strip():
            out.append(int(part))
    return tuple(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="find-ros reference-eval", description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="600-609", help="scene seeds, e.g. 600-609 or 600,602")
    ap.add_argument("--views", type=int, default=EvalConfig.n_views)
    ap.add_argument("--no-field", action="store_true", help="skip the field query (faster)")
    ap.add_argument("--model", default="", help="FIND model directory (default: the shipped one)")
    ap.add_argument("--json", default="", help="write the report here")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = EvalConfig(seeds=_parse_seeds(a.seeds), n_views=a.views, field=not a.no_field, model_path=a.model)
    report = run(cfg)
    print(json.dumps(report["summary"], indent=1))
    for b in report["bad_clicks"]:
        print(f"  bad click {b['case']:<24} refused={b['refused']} named={b['kind_named']} "
              f"stored_nothing={b['stored_nothing']}: "
              f"{b['message'][:110]}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
