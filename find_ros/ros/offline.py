"""``find-ros run``: the perception node over a recorded rosbag2, offline, its outputs recorded into a new rosbag2.

    find-ros run --bag IN --instruction "the red chair" [--instruction-at T ...] --out OUT
                 [--grounder find|hsv-baseline] [--model DIR] [--field] [--storage sqlite3|mcap]

The frames go through the same code as on a robot: a :class:`~find_ros.ros.perception_node.PerceptionNode` in this
process, configured and activated through its lifecycle, fed over DDS (a private domain, claimed for the run) by a
publisher in this process with the camera topics of the sim camera / replay node. Frames are read from the bag with
:mod:`find_ros.sim.bag` (malformed messages counted and skipped) and published one at a time with their recorded
header stamps: the next one when the node has accounted for the previous one (grounded, idle, rejected) and its
outputs have been recorded, so the node always keeps up and no frame is lost to keep-last-1 queues. The node runs
with ``max_stamp_age_s: 0`` (recorded stamps are old by design).

The node's outputs (``find/grounding``, ``find/mask``, ``find/overlay``, ``find/target_pose``,
``find/target_pose_world``, ``find/markers``, with ``--field`` ``find/field/cloud``) are serialised with
``rclpy.serialization.serialize_message`` and written with the ``rosbags`` writer (rosbag2 format 9, sqlite3 or mcap)
under the recorded stamp of their frame (the field cloud under the latest frame's), with their message definitions (the find_ros ones from ``msg/``), so
``rosbags``, ``ros2 bag`` and Foxglove read the bag. ``OUT/summary.json`` (or ``--summary``) holds frames in /
processed / skipped, the bag's malformed and unpaired counts, the node's counters, per-instruction found fractions
and timing. A progress bar goes to stderr.

``--instruction TEXT`` may be repeated; ``--instruction-at T`` (seconds after the bag's first frame, by recorded
stamp) gives each its start: one per instruction, or one fewer (the first starts at 0). Ctrl-C ends the run early
with a complete bag and summary.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from find_ros.ros.offline_feed import run_bag
from find_ros.ros.offline_plan import Instruction, RunError, schedule
from find_ros.ros.offline_record import OUTPUT_TOPICS, find_ros_msg_dir, output_typestore
from find_ros.sim.bag import BagConfig, BagConfigError, BagError, config_fields

__all__ = ["OUTPUT_TOPICS", "RunError", "Instruction", "schedule", "find_ros_msg_dir", "output_typestore",
           "run_bag", "cli"]


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT / SIGTERM set the yielded event (the run winds down and writes its bag and summary) instead of
    raising; the previous handlers are back afterwards. Only in the main thread (elsewhere: no handlers)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    sigs = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in sigs}
    for s in sigs:
        signal.signal(s, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _parser() -> argparse.ArgumentParser:
    """The ``find-ros run`` argument parser."""
    ap = argparse.ArgumentParser(prog="find-ros run", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--bag", required=True, type=Path, help="input rosbag2 folder (or its .db3 / .mcap file)")
    ap.add_argument("--instruction", action="append", required=True, metavar="TEXT",
                    help="instruction text (repeatable)")
    ap.add_argument("--instruction-at", action="append", type=float, metavar="T",
                    help="start of each instruction, s after the first frame (one per instruction, or one fewer)")
    ap.add_argument("--out", required=True, type=Path, help="output rosbag2 folder (must not exist)")
    from find_ros.ros.params import PARAMS_BY_NAME  # the node's table: defaults and choices written once

    grounder, device = PARAMS_BY_NAME["grounder"], PARAMS_BY_NAME["device"]
    ap.add_argument("--grounder", default=grounder.default, choices=grounder.choices, help="perception grounder")
    ap.add_argument("--model", default=None, help="FIND model directory (default: the shipped model)")
    ap.add_argument("--device", default=device.default, help="torch device of the FIND model")
    ap.add_argument("--field", action="store_true", help="fuse the 3D feature field; record find/field/cloud")
    ap.add_argument("--storage", default="sqlite3", choices=("sqlite3", "mcap"), help="output bag storage")
    ap.add_argument("--summary", type=Path, default=None, help="summary JSON (default OUT/summary.json)")
    ap.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0 = all)")
    ap.add_argument("--frame-timeout", type=float, default=30.0,
                    help="seconds to wait for the node to settle one frame before counting it skipped")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="another perception node parameter, typed as in a params file (repeatable)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    ap.add_argument("--verbose", action="store_true", help="show the perception node's info log")
    bag_group = ap.add_argument_group("bag topics and pairing (find_ros.sim.bag.BagConfig)")
    for name, default, desc in config_fields():
        bag_group.add_argument("--" + name.replace("_", "-"), dest="bag_" + name, default=default,
                               metavar=name.split("_")[-1].upper(), type=type(default), help=desc)
    return ap


def _node_params(items: list[str]) -> dict:
    """``--param NAME=VALUE`` items as parameter values (YAML-typed); RunError for one without ``=``."""
    import yaml

    node_params = {}
    for item in items:
        if "=" not in item:
            raise RunError(f"--param {item!r} is not NAME=VALUE")
        k, v = item.split("=", 1)
        node_params[k.strip()] = yaml.safe_load(v) if v.strip() else ""
    return node_params


def _print_summary(s: dict, out: Path) -> None:
    """The run's result in a few lines on stdout."""
    print(f"find-ros run: {s['frames_in']} frames in, {s['frames_processed']} processed, {s['frames_skipped']} "
          f"skipped; bag malformed {s['malformed_total']} ({s['malformed'] or 'none'}); "
          f"{s['timing']['frames_per_s']} frames/s{' (interrupted)' if s['interrupted'] else ''}")
    for ins in s["instructions"]:
        frac = "n/a" if ins["found_fraction"] is None else f"{ins['found_fraction']:.2f}"
        print(f"  {ins['id']} {ins['text']!r} from {ins['at_s']:g} s: found in {frac} of {ins['frames_grounded']} "
              f"frames{'' if ins['accepted'] else ' (REJECTED: ' + ins['message'] + ')'}")
    print(f"output bag: {out}  summary: {s['summary_path']}")


def cli(argv: list[str] | None = None) -> int:
    """``find-ros run`` entry point."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        node_params = _node_params(args.param)
        config = BagConfig(**{name: getattr(args, "bag_" + name) for name, _, _ in config_fields()})
        plan = schedule(args.instruction, args.instruction_at)
    except (RunError, BagConfigError) as e:
        print(f"find-ros run: {e}", file=sys.stderr)
        return 2
    with stop_on_signals() as stop:
        try:
            s = run_bag(args.bag, plan, args.out, grounder=args.grounder, model=args.model, device=args.device,
                        field=args.field, storage=args.storage, config=config, node_params=node_params,
                        frame_timeout_s=args.frame_timeout, max_frames=args.max_frames,
                        progress=not args.no_progress, verbose=args.verbose, summary_path=args.summary, stop=stop)
        except (RunError, BagError) as e:
            print(f"find-ros run: {e}", file=sys.stderr)
            return 2
    _print_summary(s, args.out)
    return 0
