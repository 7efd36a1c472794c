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
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

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


def run(cfg: EvalConfig) -> dict:
    """The evaluation (see the module docstring); returns the report dict. Does not touch ``os.environ``."""
    import rclpy
    from geometry_msgs.msg import PointStamped, PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.logging import LoggingSeverity
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from std_srvs.srv import Trigger

    from find_ros.msg import Grounding, InterleavedInstruction
    from find_ros.ros import conversions as conv
    from find_ros.grounding.geometry import backproject
    from find_ros.ros.dds import claim_domain_id
    from find_ros.ros.perception_node import PerceptionNode
    from find_ros.ros.qos import OUTPUT_QOS, SENSOR_QOS
    from find_ros.ros.shutdown import release_context
    from find_ros.ros.sim_camera_node import RgbdPublisher
    from find_ros.sim import Scene, SimRenderer, orbit_trajectory
    from find_ros.srv import AddReference, QueryField, RemoveReference, SetInstruction

    t0 = time.monotonic()
    tmp = tempfile.TemporaryDirectory(prefix="find_ros_ref_eval_")
    lease = claim_domain_id()
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=lease.domain_id, signal_handler_options=SignalHandlerOptions.NO)
    executor = SingleThreadedExecutor(context=ctx)
    node = feeder = saved_level = None
    report: dict[str, Any] = {"config": dataclasses.asdict(cfg), "scenes": []}
    try:
        params = [Parameter("grounder", value="find"), Parameter("reference_dir", value=str(Path(tmp.name) / "refs")),
                  Parameter("max_stamp_age_s", value=0.0), Parameter("publish_overlay", value=False),
                  Parameter("publish_markers", value=False), Parameter("field_enable", value=bool(cfg.field)),
                  Parameter("field_publish_period_s", value=1000.0), Parameter("status_period_s", value=1000.0)]
        if cfg.model_path:
            params.append(Parameter("model_path", value=str(cfg.model_path)))
        node = PerceptionNode(context=ctx, parameter_overrides=params)
        saved_level = node.get_logger().get_effective_level()  # logger levels are per process: restored below
        node.get_logger().set_level(LoggingSeverity.ERROR)
        feeder = rclpy.create_node("find_ros_reference_eval", context=ctx)
        for n in (node, feeder):
            executor.add_node(n)
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS or \
                node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError("the perception node did not activate (its log says why)")
        camera = RgbdPublisher(feeder, frame_id="camera_color_optical_frame", world_frame="map",
                               depth_encoding="32FC1", publish_odom=False, publish_tf=False)
        pose_pub = feeder.create_publisher(PoseStamped, "camera/pose", SENSOR_QOS)
        groundings: dict[int, Any] = {}
        masks: dict[int, Any] = {}
        feeder.create_subscription(Grounding, "find/grounding",
                                   lambda m: groundings.__setitem__(conv.stamp_to_ns(m.header.stamp), m), OUTPUT_QOS)
        feeder.create_subscription(Image, "find/mask",
                                   lambda m: masks.__setitem__(conv.stamp_to_ns(m.header.stamp), m), OUTPUT_QOS)
        clients = {"add": feeder.create_client(AddReference, "find/reference/add"),
                   "remove": feeder.create_client(RemoveReference, "find/reference/remove"),
                   "set": feeder.create_client(SetInstruction, "find/set_instruction")}
        if cfg.field:
            clients["query"] = feeder.create_client(QueryField, "find/field/query")
            clients["clear"] = feeder.create_client(Trigger, "find/field/clear")

        def spin_until(cond, timeout_s: float) -> bool:
            end = time.monotonic() + timeout_s
            while not cond():
                if time.monotonic() > end:
                    return bool(cond())
                executor.spin_once(timeout_sec=0.01)
            return True

        def call(name: str, req):
            fut = clients[name].call_async(req)
            if not spin_until(fut.done, 60.0):
                raise RuntimeError(f"{name}: no answer in 60 s")
            return fut.result()

        pubs = [camera.color, camera.depth, camera.info, pose_pub]
        if not spin_until(lambda: all(c.service_is_ready() for c in clients.values())
                          and all(p.get_subscription_count() > 0 for p in pubs), 30.0):
            raise RuntimeError("the node's services and subscriptions did not come up in 30 s")
        stamp_ns = [time.time_ns()]

        def publish(frame, *, wait_output: bool) -> int:
            """Publish one frame (pose first), wait until the node took it; returns its stamp (ns)."""
            stamp_ns[0] += 100_000_000
            stamp = conv.stamp_from_ns(stamp_ns[0])
            c = node.counters()
            before = c.get("processed", 0) + c.get("idle", 0) + c.get("rejected", 0)
            pose_pub.publish(PoseStamped(header=Header(stamp=stamp, frame_id="map"),
                                         pose=conv.matrix_to_pose(frame.T_world_cam)))
            camera.publish(stamp=stamp, color=frame.color, depth_m=frame.depth, K=frame.K, T_world_cam=None)

            def taken():
                c = node.counters()
                return c.get("processed", 0) + c.get("idle", 0) + c.get("rejected", 0) > before
            if not spin_until(taken, cfg.frame_timeout_s):
                raise RuntimeError("the node did not take a frame in time")
            if wait_output and not spin_until(lambda: stamp_ns[0] in groundings and stamp_ns[0] in masks,
                                              cfg.frame_timeout_s):
                raise RuntimeError("no grounding for a frame")
            return stamp_ns[0]

        all_point, all_pixel, all_ground, all_pos, all_oracle, goals_ok, goals_n = [], [], [], [], [], 0, 0
        for seed in cfg.seeds:
            scene = Scene.generate(seed)
            renderer = SimRenderer(scene, width=cfg.width, height=cfg.height)
            poses = orbit_trajectory(scene, cfg.n_views)
            views = {i: renderer.render(poses[i], index=i) for i in sorted({0, *cfg.ground_views})}
            f0 = views[0]
            if cfg.field:  # every scene is built around the same origin: start from an empty field
                r = call("clear", Trigger.Request())
                if not r.success:
                    raise RuntimeError(f"find/field/clear: {r.message}")
            publish(f0, wait_output=False)
            publish(f0, wait_output=False)  # the pose of the newest frame is in the buffer by now
            ids, areas = np.unique(f0.instance, return_counts=True)
            objs = [(int(i), int(a)) for i, a in zip(ids, areas) if i != 0 and a >= cfg.min_area]
            objs = sorted(objs, key=lambda x: -x[1])[:cfg.max_objects_per_scene]
            scene_rep = {"seed": seed, "objects": []}
            for oid, area in objs:
                gt = f0.instance == oid
                u, v = _deepest_pixel(gt)
                z = float(f0.depth[v, u])
                pc = np.array([(u + 0.5 - f0.K[0, 2]) * z / f0.K[0, 0], (v + 0.5 - f0.K[1, 2]) * z / f0.K[1, 1], z])
                pw = f0.T_world_cam[:3, :3] @ pc + f0.T_world_cam[:3, 3]
                name = f"s{seed}o{oid}"
                req = AddReference.Request(name=name, source=AddReference.Request.SOURCE_POINT)
                req.point = PointStamped()
                req.point.header.frame_id = "map"
                req.point.point.x, req.point.point.y, req.point.point.z = map(float, pw)
                r = call("add", req)
                o = {"id": oid, "object": scene.object(oid).describe(), "area": area, "point_ok": bool(r.success),
                     "point_message": r.message}
                o["point_iou"] = _reference_iou(node, name, gt) if r.success else 0.0
                all_point.append(o["point_iou"])
                req = AddReference.Request(name=name + "px", source=AddReference.Request.SOURCE_PIXEL)
                req.pixel = PointStamped()
                req.pixel.point.x, req.pixel.point.y = float(u), float(v)
                r2 = call("add", req)
                o["pixel_iou"] = _reference_iou(node, name + "px", gt) if r2.success else 0.0
                all_pixel.append(o["pixel_iou"])
                if r2.success:
                    call("remove", RemoveReference.Request(name=name + "px"))
                scene_rep["objects"].append(o)
            # "the <name>" in later views
            for o in scene_rep["objects"]:
                if not o["point_ok"]:
                    continue
                name = f"s{seed}o{o['id']}"
                r = call("set", SetInstruction.Request(instruction=InterleavedInstruction(text=f"the <{name}>")))
                if not r.success:
                    o["ground_message"] = r.message
                    continue
                ious, last_pos, seen, view_errors = [], None, [], []
                centre = np.asarray(scene.object(o["id"]).center, dtype=float)
                for i in cfg.ground_views:
                    f = views[i]
                    s = publish(f, wait_output=True)
                    gt = f.instance == o["id"]
                    if gt.sum() >= cfg.min_visible:  # the oracle: ground-truth masks of the same views
                        seen.append(backproject(f.depth, f.K, gt) @ f.T_world_cam[:3, :3].T + f.T_world_cam[:3, 3])
                    g = groundings[s]
                    e = g.entities[0] if g.entities else None
                    label = conv.image_to_numpy(masks[s])
                    if gt.sum() >= cfg.min_visible:
                        ious.append(_iou(label == 1, gt))
                    if e is not None and e.found and e.world_pose_valid:
                        p = e.world_pose.pose.position
                        last_pos = np.array([p.x, p.y, p.z])
                        view_errors.append(round(float(np.linalg.norm(last_pos - centre)), 3))
                    else:
                        view_errors.append(None)
                o["ground_ious"] = [round(x, 3) for x in ious]
                o["ground_miou"] = float(np.mean(ious)) if ious else None
                all_ground.extend(ious)
                o["view_position_errors_m"] = view_errors
                o["position_error_m"] = float(np.linalg.norm(last_pos - centre)) if last_pos is not None else None
                if o["position_error_m"] is not None:
                    all_pos.append(o["position_error_m"])
                if seen:  # what these views allow: the robust (5..95 %) box centre of the object's visible surface
                    P = np.concatenate(seen)
                    oracle = (np.percentile(P, 5, axis=0) + np.percentile(P, 95, axis=0)) / 2
                    o["oracle_position_error_m"] = float(np.linalg.norm(oracle - centre))
                    all_oracle.append(o["oracle_position_error_m"])
                if cfg.field:
                    q = call("query", QueryField.Request(text=f"the <{name}>", max_goals=1))
                    ob = scene.object(o["id"])
                    lo, hi = np.asarray(ob.box_min) - cfg.goal_margin_m, np.asarray(ob.box_max) + cfg.goal_margin_m
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
                    goals_ok += ok
                    goals_n += 1
            report["scenes"].append(scene_rep)
            log.info("seed %d: %s", seed, [(o["object"], round(o["point_iou"], 2), o.get("ground_miou"))
                                           for o in scene_rep["objects"]])
        report["bad_clicks"] = _bad_clicks(call, publish, spin_until, views, AddReference, PointStamped,
                                           conv, node, cfg)
        report["summary"] = {
            "objects": len(all_point), "scenes": len(cfg.seeds),
            "point_click_mean_iou": float(np.mean(all_point)) if all_point else None,
            "point_click_median_iou": float(np.median(all_point)) if all_point else None,
            "pixel_click_mean_iou": float(np.mean(all_pixel)) if all_pixel else None,
            "ground_views": len(all_ground),
            "ground_mean_iou": float(np.mean(all_ground)) if all_ground else None,
            "position_error_median_m": float(np.median(all_pos)) if all_pos else None,
            "position_within_5cm": f"{sum(p <= 0.05 for p in all_pos)}/{len(all_pos)}",
            "oracle_position_error_median_m": float(np.median(all_oracle)) if all_oracle else None,
            "oracle_position_within_5cm": f"{sum(p <= 0.05 for p in all_oracle)}/{len(all_oracle)}",
            "field_goal_on_object": f"{goals_ok}/{goals_n}",
            "bad_clicks_refused": f"{sum(_refused_cleanly(b) for b in report['bad_clicks'])}/{len(report['bad_clicks'])}",
            "model": node.counters().get("model", ""),
            "wall_s": round(time.monotonic() - t0, 1),
        }
        return report
    finally:
        if node is not None and saved_level is not None:
            node.get_logger().set_level(saved_level)
        executor.shutdown()
        for n in (node, feeder):
            if n is not None:
                n.destroy_node()
        node = feeder = executor = None
        release_context(ctx)
        lease.release()
        tmp.cleanup()


def _bad_clicks(call, publish, spin_until, views, AddReference, PointStamped, conv, node, cfg) -> list[dict]:
    """Each bad click: refused (success false, a message naming the problem) and nothing stored."""
    f = views[0]
    publish(f, wait_output=False)
    publish(f, wait_output=False)
    H, W = f.depth.shape
    floor = cv2.erode((f.instance == 0).astype(np.uint8), np.ones((41, 41), np.uint8)) > 0
    ys, xs = np.nonzero(floor[H // 2:])
    fu, fv = int(xs[len(xs) // 2]), int(ys[len(ys) // 2]) + H // 2
    objs = [i for i in np.unique(f.instance) if i != 0 and (f.instance == i).sum() >= cfg.min_area]
    u, v = _deepest_pixel(f.instance == objs[0])
    z = float(f.depth[v, u])
    pc = np.array([(u + 0.5 - f.K[0, 2]) * z / f.K[0, 0], (v + 0.5 - f.K[1, 2]) * z / f.K[1, 1], z])
    pw = f.T_world_cam[:3, :3] @ pc + f.T_world_cam[:3, 3]
    behind = f.T_world_cam[:3, :3] @ (pc * 0.5) + f.T_world_cam[:3, 3]  # half-way to the camera: free space

    def pixel(x, y, *, stamp_offset_s=None, name=""):
        r = AddReference.Request(name=name, source=AddReference.Request.SOURCE_PIXEL)
        r.pixel = PointStamped()
        r.pixel.point.x, r.pixel.point.y = float(x), float(y)
        if stamp_offset_s is not None:
            r.pixel.header.stamp = conv.stamp_from_ns(_newest_stamp(node) + int(stamp_offset_s * 1e9))
        return r

    def point(p, *, frame="map", name=""):
        r = AddReference.Request(name=name, source=AddReference.Request.SOURCE_POINT)
        r.point = PointStamped()
        r.point.header.frame_id = frame
        r.point.point.x, r.point.point.y, r.point.point.z = map(float, p)
        return r

    cases = [("outside the image", pixel(W + 10, 5), "outside_image"),
             ("on the floor", pixel(fu, fv), "no_object"),
             ("stale stamp", pixel(u, v, stamp_offset_s=-30.0), "stale_stamp"),
             ("future stamp", pixel(u, v, stamp_offset_s=30.0), "future_stamp"),
             ("unknown frame", point(pw, frame="base_link"), "unknown_frame"),
             ("off the visible surface", point(behind), "occluded"),
             ("oversize name", pixel(u, v, name="x" * 100), "BadReferenceName"),
             ("bad name", pixel(u, v, name="my mug"), "BadReferenceName")]
    first = call("add", pixel(u, v, name="dupe"))
    cases.append(("duplicate name", pixel(u, v, name="dupe"), "DuplicateReferenceName"))
    out = []
    for what, req, kind in cases:
        before = node.counters().get("references", 0)
        r = call("add", req)
        after = node.counters().get("references", 0)
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
