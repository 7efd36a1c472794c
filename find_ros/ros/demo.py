"""``find-ros demo``: the sim camera and the perception node as real ROS 2 processes, scripted instructions, a report.

Starts ``sim_camera_node`` and ``perception_node`` (``autostart:=true``) as separate processes on a
``ROS_DOMAIN_ID`` claimed for the run, over the shipped shared-memory Fast DDS profile
(:mod:`find_ros.ros.dds`), and runs a driver node in this
process that reads the sim ground truth (``camera/gt/objects``, ``camera/gt/instance``), publishes
instructions naming scene objects (two by text, then one interleaved ``"the <0>"`` with a reference
crop cut from a camera frame), and collects ``find/grounding``, ``find/mask`` and ``find/status``, and
``find/overlay`` for the last second of each instruction only (a snapshot: the node builds the overlay only for
subscribers, so the run measures a headless consumer). It writes ``DIR/report.json`` (frames in / processed / dropped, latency = receipt
of the Grounding here minus its header stamp, first vs last quarter, per-instruction IoU of the
published mask against the sim instance ground truth) plus overlay PNGs and the two nodes' logs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from find_ros.ros.dds import DEFAULT_TRANSPORT, claim_domain_id, select_for_this_process
from find_ros.ros.demo_driver import DemoDriver
from find_ros.ros.demo_graph import DemoError, DemoGraph, DemoInterrupted, tail
from find_ros.ros.shutdown import StopSignals

__all__ = ["cli", "run_demo", "DemoError", "DemoInterrupted"]

_COLOURS_FIRST = ("red",)
OVERLAY_SNAPSHOT_S = 1.0
"""Seconds at the end of each instruction during which the driver subscribes to ``find/overlay``."""


def _percentile(x: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(x), q)) if x else None


def _latency_stats(lat_ms: list[float]) -> dict[str, Any]:
    n = len(lat_ms)
    q = max(n // 4, 1)
    first, last = lat_ms[:q], lat_ms[-q:]
    return {
        "count": n,
        "median": _percentile(lat_ms, 50), "p95": _percentile(lat_ms, 95),
        "mean": float(np.mean(lat_ms)) if lat_ms else None, "max": float(np.max(lat_ms)) if lat_ms else None,
        "first_quarter_median": _percentile(first, 50), "first_quarter_p95": _percentile(first, 95),
        "last_quarter_median": _percentile(last, 50), "last_quarter_p95": _percentile(last, 95),
    }


def _pick_targets(objects: list[dict]) -> list[dict]:
    """Objects to ask for: a red one first when there is one, then others of distinct colours."""
    ordered = sorted(objects, key=lambda o: (o.get("colour") not in _COLOURS_FIRST, o["id"]))
    picked, colours = [], set()
    for o in ordered:
        if o.get("colour") not in colours:
            picked.append(o)
            colours.add(o.get("colour"))
    return picked + [o for o in ordered if o not in picked]


def _text(obj: dict) -> str:
    return f"the {obj['colour']} {obj['category']}".replace("_", " ")


def _send_interleaved(g: DemoGraph, iid: str, obj: dict, out: Path) -> str:
    """``"the <0>"`` with a crop of ``obj`` as its reference (text when it is not in view); the text sent."""
    import cv2

    d = g.driver
    d.watch_crop_sources(True)
    g.spin_until(lambda: d.reference_crop(int(obj["id"])) is not None, 3.0)
    ref = d.reference_crop(int(obj["id"]))
    if ref is None:  # the object is not in view right now: fall back to text
        text = _text(obj)
        d.publish_instruction(iid, text, obj)
    else:
        text = "the <0>"
        d.publish_instruction(iid, text, obj, reference=ref)
        cv2.imwrite(str(out / "reference_crop.png"), cv2.cvtColor(ref[0], cv2.COLOR_RGB2BGR))
    d.watch_crop_sources(False)  # no more crops needed
    return text


def _drive_script(g: DemoGraph, *, out: Path, seconds: float, snapshots: bool = True) -> tuple[list[dict], list[str]]:
    """Two text instructions, then an interleaved one, each held for a third of the run; (script, overlay PNGs)."""
    import cv2

    d = g.driver
    period = max(seconds / 3.0, 1.0)
    targets = _pick_targets(d.objects)
    script: list[dict] = []
    overlays: list[str] = []
    t0 = time.monotonic()
    for k in range(3):
        obj = targets[k % len(targets)] if k < 2 else targets[min(2, len(targets) - 1)]
        iid = f"demo-{k + 1}"
        if k < 2:
            text = _text(obj)
            d.publish_instruction(iid, text, obj)
        else:
            text = _send_interleaved(g, iid, obj, out)
        script.append({"id": iid, "text": text, "target": {key: obj.get(key) for key in
                                                          ("id", "category", "colour", "size", "description")},
                       "interleaved": text == "the <0>", "t_s": round(time.monotonic() - t0, 2)})
        hold = min(period, max(seconds - (time.monotonic() - t0), 0.0))
        shot = min(hold, OVERLAY_SNAPSHOT_S) if snapshots else 0.0
        g.spin_until(lambda: False, hold - shot)
        if shot:
            d.watch_overlay(True)  # the overlay snapshot: subscribed for the last second only
            g.spin_until(lambda: False, shot)
            d.watch_overlay(False)
        if d.overlay_last is not None:
            png = out / f"overlay_{iid}.png"
            cv2.imwrite(str(png), cv2.cvtColor(d.overlay_last, cv2.COLOR_RGB2BGR))
            overlays.append(png.name)
    return script, overlays


def _per_instruction(driver: DemoDriver, script: list[dict]) -> list[dict]:
    """Each scripted instruction with its IoU and found rate over the frames scored."""
    rows = []
    for s in script:
        ious = driver.iou.get(s["id"], [])
        fnd = driver.found.get(s["id"], [])
        rows.append({**s, "frames_scored": len(ious), "iou_mean": float(np.mean(ious)) if ious else None,
                     "iou_median": _percentile(ious, 50), "found_rate": float(np.mean(fnd)) if fnd else None})
    return rows


def _report(*, g: DemoGraph, status: dict, start_status: dict, script: list[dict], overlays: list[str],
            grounder: str, seconds: float, rate_hz: float, seed: int, domain: int) -> dict[str, Any]:
    """The ``report.json`` dict (see :func:`run_demo`)."""
    d = g.driver
    return {
        "grounder": status.get("grounder", grounder),
        "seconds": seconds, "rate_hz": rate_hz, "seed": seed, "ros_domain_id": domain,
        "frames_in": int(status.get("frames_in", 0)),
        "frames_processed": int(status.get("processed", 0)),
        "dropped": int(status.get("dropped", 0)),
        "stale": int(status.get("stale", 0)),
        "rejected": int(status.get("rejected", 0)),
        "idle_before_first_instruction": int(start_status.get("idle", 0)),
        "groundings_received": d.received,
        "latency_ms": _latency_stats(d.latency),
        "latency_definition": "reception of find/grounding at the driver (DDS received_timestamp, wall clock) "
                              "minus its header stamp (the camera frame's stamp)",
        "node_processing_ms": {"median": _percentile(d.processing_ms, 50),
                               "p95": _percentile(d.processing_ms, 95)},
        "instructions": _per_instruction(d, script),
        "overlays": overlays,
        "node_counters": status,
        "logs": {k: v.name for k, v in g.logs.items()},
        "samples": g.samples,
        "latency_series_ms": [round(x, 3) for x in d.latency],
        "processing_series_ms": [round(x, 3) for x in d.processing_ms],
    }


def run_demo(*, seconds: float = 20.0, out: Path = Path("out/demo"), rate_hz: float = 30.0,
             grounder: str = "find", seed: int = 3, startup_timeout_s: float = 60.0,
             domain_id: int | None = None, sample_period_s: float = 1.0,
             node_params: dict[str, Any] | None = None, transport: str = DEFAULT_TRANSPORT,
             stop: StopSignals | None = None, overlay_snapshots: bool = True, score: bool = True) -> dict[str, Any]:
    """Run the graph for ``seconds`` after start-up; write ``out/report.json`` and return the report.

    ``overlay_snapshots``: subscribe to ``find/overlay`` for the last second of each instruction and save the PNGs
    (``report["overlays"]``); without them nothing subscribes to the overlay (``find-ros bench``: a headless
    consumer; the node then builds no overlay). ``score``: IoU against the sim's ground-truth instance images, which
    the driver then takes every frame; without it (``find-ros bench``) it takes them only to cut the interleaved
    instruction's reference crop, and ``iou_*`` / ``found_rate`` are None.

    ``node_params`` adds perception-node parameters; ``sample_period_s`` sets how often the node's and
    camera's RSS are sampled into ``report["samples"]`` (used by the soak benchmark). ``domain_id`` defaults
    to a free one claimed for the run; ``transport`` (:mod:`find_ros.ros.dds`) is what the two node processes
    use; this process's own participant uses whatever its environment selects (``find-ros demo`` selects the
    same). A stop signal (``stop``) ends the run early with :class:`DemoInterrupted`, children stopped.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lease = claim_domain_id() if domain_id is None else None
    domain = lease.domain_id if lease is not None else int(domain_id)
    try:
        g = DemoGraph.start(out=out, domain=domain, transport=transport, rate_hz=rate_hz, seconds=seconds, seed=seed,
                         grounder=grounder, node_params=node_params, stop=stop, sample_period_s=sample_period_s,
                         score=score)
        try:
            g.wait_started(startup_timeout_s)
            start_status = dict(g.driver.status)
            script, overlays = _drive_script(g, out=out, seconds=seconds, snapshots=overlay_snapshots)
            status = g.wind_down()
        finally:
            g.close()
    finally:
        if lease is not None:
            lease.release()
    report = _report(g=g, status=status, start_status=start_status, script=script, overlays=overlays,
                     grounder=grounder, seconds=seconds, rate_hz=rate_hz, seed=seed, domain=domain)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    if report["frames_processed"] == 0 and g.driver.received == 0:
        raise DemoError(f"no frame was processed (report in {out / 'report.json'})\n"
                        f"node log:\n{tail(g.logs['node'])}")
    return report


def cli(argv: list[str] | None = None) -> int:
    """``find-ros demo`` entry point."""
    ap = argparse.ArgumentParser(prog="find-ros demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="run time after start-up (default 20)")
    ap.add_argument("--out", type=Path, default=Path("out/demo"), help="output directory (default out/demo)")
    ap.add_argument("--rate", type=float, default=30.0, help="sim camera rate in Hz (default 30)")
    ap.add_argument("--grounder", default="find", choices=("hsv-baseline", "find"),
                    help="perception node grounder (default find: the shipped FIND model)")
    ap.add_argument("--seed", type=int, default=3, help="sim scene seed (default 3)")
    ap.add_argument("--model", default=None, help="FIND model directory for --grounder find (default: the shipped one)")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    stop = StopSignals.install()
    select_for_this_process(DEFAULT_TRANSPORT)  # this process's participant speaks what its children speak
    try:
        report = run_demo(seconds=args.seconds, out=args.out, rate_hz=args.rate, grounder=args.grounder,
                          seed=args.seed, node_params={"model_path": args.model} if args.model else None,
                          stop=stop)
    except DemoInterrupted as e:
        print(f"find-ros demo: {e}", file=sys.stderr)
        return 0
    except DemoError as e:
        print(f"find-ros demo: {e}", file=sys.stderr)
        return 1
    finally:  # the graph is down: a signal forwarded now must not kill the exiting interpreter (-SIGINT)
        stop.teardown_done()
    lat = report["latency_ms"]
    print(f"grounder={report['grounder']} frames in={report['frames_in']} processed={report['frames_processed']} "
          f"dropped={report['dropped']} latency median={lat['median']:.1f} ms p95={lat['p95']:.1f} ms "
          f"(first quarter p95={lat['first_quarter_p95']:.1f}, last quarter p95={lat['last_quarter_p95']:.1f})")
    for ins in report["instructions"]:
        iou = "n/a" if ins["iou_mean"] is None else f"{ins['iou_mean']:.3f}"
        print(f"  {ins['id']} {ins['text']!r} -> {ins['target']['description']!r}: IoU {iou} "
              f"over {ins['frames_scored']} frames")
    print(f"report: {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
