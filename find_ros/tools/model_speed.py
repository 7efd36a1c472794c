"""Benchmark: ``FindGrounder.ground`` ms/frame (median) at 640x480, instruction cached.

``python -m find_ros.tools.model_speed [--checkpoint DIR] [--threads 2] [--frames 50]`` — without a checkpoint
the default tiny config with random weights (same cost as the trained one); ``--vision-kind convnext
--height 240 --width 320`` measures the tiny conv architecture at that input before any training.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from find_ros.tools.timing import time_stage


def measure(*, checkpoint: str | None = None, threads: int = 2, frames: int = 50, width: int = 640,
            height: int = 480, device: str = "cpu", tiny: dict | None = None) -> dict:
    """Median / p90 ms of ``FindGrounder.ground`` on a ``width`` x ``height`` frame; ``tiny``: build_tiny keyword
    arguments of the random model measured without a checkpoint."""
    from find_ros.instruction import Reference, parse_instruction
    from find_ros.model.data import vocabulary
    from find_ros.model.find import FindModel
    from find_ros.model.grounder import FindGrounder

    torch.set_num_threads(threads)
    model = FindModel.from_pretrained(checkpoint, device=device) if checkpoint else \
        FindModel.build_tiny(vocab=vocabulary(), seed=0, **(tiny or {}))
    g = FindGrounder(model=model, device=device)
    rng = np.random.default_rng(0)
    ref = Reference(image=rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    g.set_instruction(parse_instruction("the small red cube left of the blue torus, the <0> behind the green sphere",
                                        [ref]))
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    ts = np.asarray(time_stage(lambda: g.ground(rgb), warmup=5, repeat=frames).samples_ms)
    if checkpoint:
        from pathlib import Path

        size_mb = sum(f.stat().st_size for f in Path(checkpoint).rglob("*") if f.is_file()) / 1e6
    else:
        size_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6
    return {"ms_median": float(np.median(ts)), "ms_p90": float(np.percentile(ts, 90)), "frames": frames,
            "size_mb": round(size_mb, 2), "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
            "threads": threads, "input": f"{width}x{height}", "model_input": "x".join(map(str, model.config.vision.image_size[::-1]))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--vision-kind", default=None, help="without --checkpoint: tiny-clip | convnext | resnet")
    ap.add_argument("--height", type=int, default=None, help="without --checkpoint: model input height")
    ap.add_argument("--width", type=int, default=None, help="without --checkpoint: model input width")
    a = ap.parse_args(argv)
    tiny = {}
    if a.vision_kind:
        tiny["vision_kind"] = a.vision_kind
    if a.height or a.width:
        tiny["image_size"] = (a.height or 96, a.width or 128)
    r = measure(checkpoint=a.checkpoint, threads=a.threads, frames=a.frames, device=a.device, tiny=tiny)
    print(f"FindGrounder.ground {r['input']} (model input {r['model_input']}), {r['threads']} threads: "
          f"median {r['ms_median']:.2f} ms/frame, p90 {r['ms_p90']:.2f} ms over {r['frames']} frames; "
          f"{r['params_m']} M parameters, {r['size_mb']} MB")


if __name__ == "__main__":
    main()
