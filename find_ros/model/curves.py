"""Learning curves of a training run as a PNG drawn with cv2 + numpy (matplotlib is not a dependency).

``python -m find_ros.model.curves RUN_DIR`` redraws ``RUN_DIR/learning_curve.png`` from ``RUN_DIR/metrics.jsonl``.
The top panel holds the validation metrics (``val/*`` keys, 0..1) against the step, the bottom panel the mean
training loss (``*/total`` keys) against the step.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

__all__ = ["read_metrics", "plot_learning_curve", "CURVE_FILE"]

CURVE_FILE = "learning_curve.png"

_COLOURS = [(200, 80, 30), (40, 140, 40), (30, 30, 200), (150, 40, 150), (0, 140, 200), (90, 90, 90)]  # BGR


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (lines that do not parse are skipped: a run may be writing it)."""
    out = []
    p = Path(path)
    if not p.is_file():
        return out
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _panel(img: np.ndarray, box: tuple[int, int, int, int], series: dict[str, tuple[np.ndarray, np.ndarray]], *,
           title: str, y_range: tuple[float, float] | None, x_max: float) -> None:
    x0, y0, x1, y1 = box
    cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), 1)
    cv2.putText(img, title, (x0, y0 - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    vals = [v for _, v in series.values() if len(v)]
    if not vals:
        cv2.putText(img, "no data yet", (x0 + 10, (y0 + y1) // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (90, 90, 90), 1)
        return
    if y_range is None:
        allv = np.concatenate(vals)
        lo, hi = float(np.min(allv)), float(np.max(allv))
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        y_range = (lo, hi)
    lo, hi = y_range
    for k in range(5):  # horizontal grid with labels
        f = k / 4
        yy = int(round(y1 - f * (y1 - y0)))
        cv2.line(img, (x0, yy), (x1, yy), (225, 225, 225), 1)
        cv2.putText(img, f"{lo + f * (hi - lo):.2f}", (4, yy + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 60, 60), 1)
    for k in range(5):
        f = k / 4
        xx = int(round(x0 + f * (x1 - x0)))
        cv2.putText(img, f"{int(round(f * x_max))}", (xx - 12, y1 + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 60, 60), 1)
    for i, (name, (xs, ys)) in enumerate(series.items()):
        if not len(xs):
            continue
        c = _COLOURS[i % len(_COLOURS)]
        px = x0 + xs / max(x_max, 1e-9) * (x1 - x0)
        py = y1 - (np.clip(ys, lo, hi) - lo) / (hi - lo) * (y1 - y0)
        pts = np.round(np.stack([px, py], axis=1)).astype(np.int32)
        if len(pts) > 1:
            cv2.polylines(img, [pts[:, None, :]], False, c, 2, cv2.LINE_AA)
        for p in pts if len(pts) <= 60 else pts[-1:]:
            cv2.circle(img, (int(p[0]), int(p[1])), 3, c, -1, cv2.LINE_AA)
        cv2.putText(img, f"{name} {ys[-1]:.3f}", (x0 + 8, y0 + 18 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, c, 1,
                    cv2.LINE_AA)


def plot_learning_curve(records: list[dict], path: str | Path, *, width: int = 720, height: int = 540) -> Path:
    """Draw the validation metrics and the training loss of ``records`` (metrics.jsonl lines) into ``path``."""
    img = np.full((height, width, 3), 255, np.uint8)
    steps = [int(r["step"]) for r in records if "step" in r]
    x_max = float(max(steps)) if steps else 1.0
    val_keys = sorted({k for r in records for k in r if k.startswith("val/")})
    val = {}
    for k in val_keys:
        pts = [(r["step"], r[k]) for r in records if k in r and r[k] is not None and np.isfinite(r[k])]
        val[k[4:]] = (np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float))
    loss_x, loss_y = [], []
    for r in records:
        tot = [v for k, v in r.items() if k.endswith("/total") and not k.startswith("val/")]
        if tot:
            loss_x.append(r["step"])
            loss_y.append(float(np.mean(tot)))
    # a running mean over 9 records smooths the task mixture of single batches
    ly = np.array(loss_y, float)
    if len(ly) >= 9:
        ly = np.convolve(np.pad(ly, (4, 4), mode="edge"), np.ones(9) / 9, mode="valid")
    left, right = 60, width - 20
    mid = height // 2
    _panel(img, (left, 40, right, mid - 30), val, title="validation (fixed val set) vs step", y_range=(0.0, 1.0),
           x_max=x_max)
    _panel(img, (left, mid + 30, right, height - 30), {"train loss (smoothed)": (np.array(loss_x, float), ly)},
           title="training loss vs step", y_range=None, x_max=x_max)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    if not cv2.imwrite(str(tmp), img):
        raise OSError(f"cv2 could not write {tmp}")
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", help="training output folder holding metrics.jsonl")
    a = ap.parse_args(argv)
    d = Path(a.run_dir)
    print(plot_learning_curve(read_metrics(d / "metrics.jsonl"), d / CURVE_FILE))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
