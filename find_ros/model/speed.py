"""Benchmark: ``FindGrounder.ground`` ms/frame (median) at 640x480, instruction cached.

``python -m find_ros.model.speed [--checkpoint DIR] [--threads 2] [--frames 50]`` — without a checkpoint
the default tiny config with random weights (same cost as the trained one).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def measure(*, checkpoint: str | None = None, threads: int = 2, frames: int = 50, width: int = 640,
            height: int = 480, device: str = "cpu") -> dict:
    from find_ros.instruction import Reference, parse_instruction
    from find_ros.model.data import vocabulary
    from find_ros.model.find import FindModel
    from find_ros.model.grounder import FindGrounder

    torch.set_num_threads(threads)
    model = FindModel.from_pretrained(checkpoint, device=device) if checkpoint else \
        FindModel.build_tiny(vocab=vocabulary(), seed=0)
    g = FindGrounder(model=model, device=device)
    rng = np.random.default_rng(0)
    ref = Reference(image=rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    g.set_instruction(parse_instruction("the small red cube left of the blue torus, the <0> behind the green sphere",
                                        [ref]))
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    for _ in range(5):
        g.ground(rgb)
    ts = []
    for _ in range(frames):
        t0 = time.perf_counter()
        g.ground(rgb)
        ts.append((time.perf_counter() - t0) * 1000.0)
    ts = np.asarray(ts)
    return {"ms_median": float(np.median(ts)), "ms_p90": float(np.percentile(ts, 90)), "frames": frames,
            "threads": threads, "input": f"{width}x{height}", "model_input": "x".join(map(str, model.config.vision.image_size[::-1]))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    r = measure(checkpoint=a.checkpoint, threads=a.threads, frames=a.frames, device=a.device)
    print(f"FindGrounder.ground {r['input']} (model input {r['model_input']}), {r['threads']} threads: "
          f"median {r['ms_median']:.2f} ms/frame, p90 {r['ms_p90']:.2f} ms over {r['frames']} frames")


if __name__ == "__main__":
    main()
