"""``find-ros bench``: speed and memory of every stage, each next to a reference measured in the same run.

Each stage is timed after warm-up as median / p95 over repeated runs; the peak RSS of the process is
reset before a stage (Linux ``/proc/self/clear_refs``) and read after it. Ratios compare a stage with
a reference timed in the same run, because absolute figures on shared machines drift:

- conversions: ``find_ros.ros.conversions`` vs a plain ``np.frombuffer(...).copy()`` / ``tobytes()``;
- model: the FIND model's own forward pass at 3 sizes, and at 640x480 with the node's ``torch_threads``
  (``model_forward_640x480``); the same forward timed again just before and just after the end-to-end run, pooled,
  is the reference of the node's processing time (``e2e_find.model_forward_reference``); the same again with one
  call per camera period (``model_forward_reference_paced``, ``ratios.node_processing_vs_paced_model_forward``),
  because on shared VMs a forward that follows 15 ms of idle runs slower than back to back (7-18 % on 2026-12-03);
- field: our embedding fusion vs open3d's own TSDF + colour integration, and vs a naive numpy
  scatter-mean;
- end to end: stamp -> publish latency through real DDS between processes (``find-ros demo`` graph), the
  node's processing time per frame and its per-stage breakdown (``stage_ms``: rolling medians the running node
  publishes on ``find/status``), and ``ratios.node_processing_vs_model_forward``.

A stage whose layer is missing from the install is reported with ``"error"`` instead of figures; ``"source"`` names
the git commit the figures come from (and whether tracked files differed from it).
``--soak-minutes M`` runs the demo graph for M minutes and reports RSS and latency drift.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from find_ros.tools.timing import StageTiming, peak_rss_mb, reset_peak_rss, time_stage

__all__ = ["cli", "run_bench", "source_revision", "time_stage", "StageTiming", "peak_rss_mb", "reset_peak_rss"]


def _ratio(a: dict, b: dict) -> float | None:
    if not a or not b or "median_ms" not in a or "median_ms" not in b or b["median_ms"] <= 0:
        return None
    return round(a["median_ms"] / b["median_ms"], 3)


class _Bench:
    def __init__(self, *, quick: bool) -> None:
        self.quick = quick
        self.warmup = 2 if quick else 5
        self.repeat = 10 if quick else 50
        self.stages: dict[str, Any] = {}
        self.ratios: dict[str, Any] = {}
        self.scaling: dict[str, list[dict]] = {}
        self._forward_reference: Callable[..., StageTiming] | None = None  # set by model(): the e2e reference

    def t(self, fn: Callable[[], Any], *, repeat: int | None = None) -> dict:
        return time_stage(fn, warmup=self.warmup, repeat=repeat or self.repeat).as_dict()

    def run(self, name: str, fn: Callable[[], None]) -> None:
        t0 = time.monotonic()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            fn()
        except Exception as e:  # a missing layer or a failure: reported, the other stages still run
            self.stages[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=3)}
            print(f"[bench] {name} FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        print(f"[bench] {name} done in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)

    # ---------------------------------------------------------------- stages
    def conversions(self) -> None:
        from find_ros.ros import conversions as conv

        rng = np.random.default_rng(0)
        rgb = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        depth = rng.integers(300, 5000, (480, 640), dtype=np.uint16)
        msg_rgb = conv.numpy_to_image(rgb, "rgb8")
        msg_bgr = conv.numpy_to_image(rgb[..., ::-1].copy(), "bgr8")
        msg_d = conv.numpy_to_image(depth, "16UC1")
        data = bytes(msg_rgb.data)
        out: dict[str, Any] = {
            "rgb8_in": self.t(lambda: conv.image_to_rgb(msg_rgb)),
            "bgr8_in": self.t(lambda: conv.image_to_rgb(msg_bgr)),
            "depth16_in_m": self.t(lambda: conv.image_to_depth_m(msg_d)),
            "rgb8_out": self.t(lambda: conv.numpy_to_image(rgb, "rgb8")),
            "ref_frombuffer_copy": self.t(lambda: np.frombuffer(data, np.uint8).reshape(480, 640, 3).copy()),
            "ref_tobytes": self.t(lambda: rgb.tobytes()),
        }
        xyz = rng.normal(size=(100_000, 3)).astype(np.float32)
        col = rng.integers(0, 255, (100_000, 3), dtype=np.uint8)
        score = rng.random(100_000, dtype=np.float32)
        out["cloud2_pack_100k"] = self.t(lambda: conv.points_to_cloud2(xyz, header=None, rgb=col, score=score))
        self.stages["conversions"] = out
        self.ratios["conversion_rgb8_in_vs_frombuffer_copy"] = _ratio(out["rgb8_in"], out["ref_frombuffer_copy"])
        self.ratios["conversion_rgb8_out_vs_tobytes"] = _ratio(out["rgb8_out"], out["ref_tobytes"])

    def _grounder(self, model_dir: str | None):
        """The FIND grounder of ``model_dir`` (default: the shipped checkpoint)."""
        from find_ros.model.grounder import DEFAULT_MODEL_DIR, FindGrounder

        path = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no FIND model in {path} (config.json missing); pass --model DIR")
        self.stages["model_dir"] = str(path)
        return FindGrounder.from_pretrained(path, device="cpu")

    def model(self, model_dir: str | None) -> None:
        import torch

        from find_ros.instruction import parse_instruction

        g = self._grounder(model_dir)
        ins = parse_instruction("the red cube, the blue sphere")
        with torch.inference_mode():  # the grounder caches set_instruction; time the embedding itself
            out: dict[str, Any] = {"instruction_embedding": self.t(lambda: g.model.encode_instructions([ins]))}
        g.set_instruction(ins)
        rng = np.random.default_rng(1)
        rows = []
        for w, h in ((320, 240), (640, 480), (1280, 720)):
            rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            with torch.inference_mode():
                rows.append({"width": w, "height": h, **self.t(lambda: g.ground(rgb))})
        out["ground_per_frame"] = rows
        self.scaling["model_vs_image_size"] = rows
        # the model's own forward pass (preprocessed tensor in, raw outputs) at the node's torch thread count: the
        # reference the e2e stage's node processing time is compared with (ratios.node_processing_vs_model_forward)
        from find_ros.ros.params import PARAMS_BY_NAME

        forward = getattr(g, "forward_only", None)
        rgb = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        out["ground_640x480"] = rows[1]
        if forward is not None:
            threads = int(PARAMS_BY_NAME["torch_threads"].default) or torch.get_num_threads()
            with torch.inference_mode():
                prepared = g.prepare(rgb)

            def reference(period_s: float = 0.0) -> StageTiming:
                before = torch.get_num_threads()
                torch.set_num_threads(threads)
                try:
                    with torch.inference_mode():
                        return time_stage(lambda: forward(prepared), warmup=self.warmup, repeat=self.repeat,
                                          period_s=period_s)
                finally:
                    torch.set_num_threads(before)

            self._forward_reference = reference
            out["model_forward_640x480"] = {**reference().as_dict(), "torch_threads": threads}
        self.stages["model"] = out

    def _e2e_reference(self, before: StageTiming, after: StageTiming) -> dict[str, Any]:
        """The model forward timed just before and just after the end-to-end run, pooled: the reference of the
        node's processing time (the machine's speed drifts over a run; both halves are reported)."""
        pooled = np.asarray(before.samples_ms + after.samples_ms)
        return {"median_ms": round(float(np.median(pooled)), 4), "p95_ms": round(float(np.percentile(pooled, 95)), 4),
                "n": int(pooled.size), "before_median_ms": round(before.median_ms, 4),
                "after_median_ms": round(after.median_ms, 4),
                "torch_threads": self.stages["model"]["model_forward_640x480"]["torch_threads"]}

    def geometry(self) -> None:
        from find_ros.grounding.geometry import target_pose_from_mask

        h, w = 480, 640
        depth = np.full((h, w), 2.0, np.float32)
        mask = np.zeros((h, w), bool)
        mask[180:300, 260:380] = True
        K = np.array([[525.0, 0, 320], [0, 525.0, 240], [0, 0, 1]])
        self.stages["mask_to_pose"] = self.t(lambda: target_pose_from_mask(mask, depth, K))

    def field(self) -> None:
        from find_ros.tools import field_bench as fb

        reset_peak_rss()
        res = fb.run(frames=20 if self.quick else 60, query_voxels=200_000 if self.quick else 500_000)
        res["peak_rss_mb"] = peak_rss_mb()
        self.stages["field"] = res
        self.ratios["field_integration_vs_open3d_tsdf_colour"] = round(res["ratio_field_vs_open3d"], 3)
        self.ratios["field_integration_vs_numpy_scatter_mean"] = round(
            res["field_ms_median"] / res["numpy_scatter_mean_ms_median"], 3)
        self.scaling["field_integration_vs_embedding_dim"] = self._field_dim_scaling(fb)

    def _field_dim_scaling(self, fb) -> list[dict]:
        """Fusion ms/frame at 5 cm voxels on the same TUM frames for several embedding dimensions."""
        from find_ros.field.field import FeatureField, FieldConfig

        frames = fb._frames(fb.DEFAULT_DATA, 8 if self.quick else 30, 2)
        rng = np.random.default_rng(0)
        rows = []
        for dim in ((16, 64, 128) if self.quick else (16, 32, 64, 128, 256)):
            emb = rng.standard_normal((60, 80, dim)).astype(np.float32)
            ff = FeatureField(config=FieldConfig(voxel_size=0.05, embedding_dim=dim))
            ms = [ff.integrate(f.depth, f.K, f.T_world_cam, pixel_embeddings=emb, color=f.color).ms for f in frames]
            rows.append({"embedding_dim": dim, "median_ms": round(float(np.median(ms[1:])), 3),
                         "voxels": ff.num_voxels, "bytes_per_voxel": ff.bytes_per_voxel})
        return rows

    def e2e(self, seconds: float, grounder: str, rate_hz: float) -> None:
        from find_ros.ros.demo import run_demo

        reference = self._forward_reference if grounder == "find" else None
        period = 1.0 / rate_hz
        if reference is not None:  # back to back, then paced at the camera's rate (the order reverses after the run)
            before, before_paced = reference(), reference(period)
        with tempfile.TemporaryDirectory() as d:
            # a headless consumer, no ground-truth scoring: what runs beside the node is a camera and a consumer
            rep = run_demo(seconds=seconds, out=Path(d), rate_hz=rate_hz, grounder=grounder, overlay_snapshots=False,
                           score=False)
        ref = paced = None
        if reference is not None:
            paced = {**self._e2e_reference(before_paced, reference(period)), "period_ms": round(period * 1e3, 3)}
            ref = self._e2e_reference(before, reference())
        stage_ms = dict(rep.get("node_counters", {}).get("stage_ms") or {})
        e2e = self.stages[f"e2e_{grounder}"] = {
            "rate_hz": rate_hz, "resolution": "640x480", "seconds": seconds,
            "latency_ms": rep["latency_ms"], "node_processing_ms": rep["node_processing_ms"],
            # the running node's own per-stage medians (find/status stage_ms, last 200 frames of this run)
            "stage_ms": stage_ms,
            "frames_in": rep["frames_in"], "frames_processed": rep["frames_processed"], "dropped": rep["dropped"],
            "node_rss_mb_last": (rep["samples"][-1]["node_rss_mb"] if rep["samples"] else None),
            "model_forward_reference": ref,
            # the same forward, one call per camera period with the thread idle in between, as the node runs it
            "model_forward_reference_paced": paced,
        }
        proc = (e2e["node_processing_ms"] or {}).get("median")
        self.ratios["node_processing_vs_model_forward"] = (
            round(proc / ref["median_ms"], 3) if proc and ref and ref.get("median_ms") else None)
        self.ratios["node_processing_vs_paced_model_forward"] = (
            round(proc / paced["median_ms"], 3) if proc and paced and paced.get("median_ms") else None)
        fwd = stage_ms.get("model_forward")
        self.ratios["node_processing_vs_node_model_forward"] = round(proc / fwd, 3) if proc and fwd else None


def fifths(series: list[float]) -> list[float]:
    """Medians of the five consecutive fifths of ``series`` (rounded to 0.1), or [] for fewer than 5 values."""
    if len(series) < 5:
        return []
    return [round(float(np.median(part)), 1) for part in np.array_split(np.asarray(series, dtype=float), 5)]


def soak(minutes: float, grounder: str, rate_hz: float, *, field_blocks: int = 0) -> dict[str, Any]:
    """Run the demo graph for ``minutes``; RSS and latency of the first vs the last 20% of the run. With
    ``field_blocks`` > 0 the node fuses the feature field under that block cap (small caps keep eviction busy)."""
    from find_ros.ros.demo import run_demo

    node_params = {"field_enable": True, "field_max_blocks": int(field_blocks)} if field_blocks > 0 else None
    with tempfile.TemporaryDirectory() as d:
        rep = run_demo(seconds=minutes * 60.0, out=Path(d), rate_hz=rate_hz, grounder=grounder, sample_period_s=5.0,
                       overlay_snapshots=False, score=False, node_params=node_params)
    samples = [s for s in rep["samples"] if s["node_rss_mb"] is not None]
    n = len(samples)
    k = max(n // 5, 1)
    rss_first = float(np.median([s["node_rss_mb"] for s in samples[1:k + 1]])) if n > 2 else None
    rss_last = float(np.median([s["node_rss_mb"] for s in samples[-k:]])) if n > 2 else None
    lat, proc = fifths(rep["latency_series_ms"]), fifths(rep.get("processing_series_ms", []))

    def drift(a, b):
        return None if a in (None, 0) or b is None else round((b - a) / a, 4)

    return {"minutes": minutes, "grounder": grounder, "rate_hz": rate_hz,
            "node_rss_mb_first": rss_first, "node_rss_mb_last": rss_last, "rss_drift": drift(rss_first, rss_last),
            "latency_median_first_ms": lat[0] if lat else None, "latency_median_last_ms": lat[-1] if lat else None,
            "latency_drift": drift(lat[0], lat[-1]) if lat else None, "latency_ms": rep["latency_ms"],
            "latency_fifths_ms": lat,
            "processing_median_first_ms": proc[0] if proc else None,
            "processing_median_last_ms": proc[-1] if proc else None,
            "processing_drift": drift(proc[0], proc[-1]) if proc else None, "processing_fifths_ms": proc,
            "frames_processed": rep["frames_processed"], "dropped": rep["dropped"],
            "field": {k: v for k, v in rep.get("node_counters", {}).items() if k.startswith("field_")},
            "rss_series_mb": [(s["t_s"], s["node_rss_mb"]) for s in samples]}


def source_revision(root: Path | None = None) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the git checkout ``root`` (default: the one this package runs from): its HEAD commit
    and whether tracked files differ from it, so that a report is read with the code that produced it; both None
    when ``root`` is not the top of a git checkout (an installed package) or git cannot tell."""
    root = (Path(root) if root is not None else Path(__file__).resolve().parents[2]).resolve()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20,
                              check=True).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:  # (inside some other repository)
            return {"commit": None, "dirty": None}
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def run_bench(*, quick: bool, model_dir: str | None = None, e2e_seconds: float | None = None,
              grounder: str = "find", soak_minutes: float = 0.0, soak_field_blocks: int = 0) -> dict[str, Any]:
    """Run every stage; returns the JSON-ready report."""
    import torch

    b = _Bench(quick=quick)
    t0 = time.monotonic()
    b.run("conversions", b.conversions)
    b.run("model", lambda: b.model(model_dir))
    b.run("mask_to_pose", b.geometry)
    b.run("field", b.field)
    secs = e2e_seconds if e2e_seconds is not None else (12.0 if quick else 30.0)
    b.run("e2e", lambda: b.e2e(secs, grounder, 30.0))
    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "processor": platform.processor() or platform.machine()},
        "source": source_revision(), "quick": quick, "stages": b.stages, "ratios": b.ratios, "scaling": b.scaling,
    }
    if soak_minutes > 0:
        def _soak() -> None:
            report["soak"] = soak(soak_minutes, grounder, 30.0, field_blocks=soak_field_blocks)

        b.run("soak", _soak)
        if "soak" in b.stages:  # it failed: its error goes where its figures would have been
            report["soak"] = b.stages.pop("soak")
    report["wall_s"] = round(time.monotonic() - t0, 1)
    return report


def _scaling_table(report: dict[str, Any]) -> str:
    lines = []
    for name, rows in report.get("scaling", {}).items():
        if not rows:
            continue
        keys = list(rows[0])
        lines.append(f"## {name}")
        lines.append(" | ".join(keys))
        for r in rows:
            lines.append(" | ".join(str(r.get(k)) for k in keys))
        lines.append("")
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> int:
    """``find-ros bench`` entry point."""
    ap = argparse.ArgumentParser(prog="find-ros bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and a 12 s e2e run (< 3 min)")
    ap.add_argument("--json", type=Path, required=True, help="write the report here (a scaling table goes next to it)")
    ap.add_argument("--model", default=None, help="FIND model directory (default: the shipped model)")
    ap.add_argument("--grounder", default="find", choices=("find", "hsv-baseline"), help="grounder of the e2e run")
    ap.add_argument("--e2e-seconds", type=float, default=None, help="length of the end-to-end DDS run")
    ap.add_argument("--soak-minutes", type=float, default=0.0, help="also run a soak of this many minutes")
    ap.add_argument("--soak-field-blocks", type=int, default=0,
                    help="soak with the feature field on under this block cap (0: field off)")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    from find_ros.ros.dds import select_for_this_process

    select_for_this_process()  # the e2e stage's driver speaks what its node processes speak
    report = run_bench(quick=args.quick, model_dir=args.model, e2e_seconds=args.e2e_seconds,
                       grounder=args.grounder, soak_minutes=args.soak_minutes, soak_field_blocks=args.soak_field_blocks)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    args.json.with_suffix(".scaling.md").write_text(_scaling_table(report))
    failed = [k for k, v in report["stages"].items() if isinstance(v, dict) and "error" in v]
    node_stages = {k: v.get("stage_ms") for k, v in report["stages"].items() if k.startswith("e2e_") and "stage_ms" in v}
    print(json.dumps({"ratios": report["ratios"], "node_stage_ms": node_stages, "failed_stages": failed,
                      "source": report["source"], "wall_s": report["wall_s"]}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(cli())
