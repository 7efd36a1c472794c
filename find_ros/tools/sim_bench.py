"""Render timing: ``python -m find_ros.tools.sim_bench [--width 640 --height 480 --frames 60 --threads N]``.

Prints median and p90 ms per frame for the full ``SimRenderer.render`` and for the bare ``cast_rays`` call.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import open3d as o3d

from find_ros.sim.render import SimRenderer
from find_ros.sim.scene import Scene
from find_ros.sim.trajectory import orbit_trajectory, walkthrough_trajectory


def _times(fn, items) -> np.ndarray:
    out = []
    for x in items:
        t0 = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t0)
    return np.array(out) * 1e3


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--texture", action="store_true")
    ap.add_argument("--invalid-depth", action="store_true")
    a = ap.parse_args(argv)
    scene = Scene.generate(a.seed, n_objects=(8, 10), texture=a.texture)
    poses = orbit_trajectory(scene, a.frames // 2) + walkthrough_trajectory(scene, a.frames - a.frames // 2)
    t0 = time.perf_counter()
    r = SimRenderer(scene, width=a.width, height=a.height, invalid_depth=a.invalid_depth,
                    noise_std=0.005 if a.invalid_depth else 0.0)
    build = (time.perf_counter() - t0) * 1e3
    r.render(poses[0])  # warm up
    full = _times(lambda T: r.render(T), poses)
    rays = o3d.core.Tensor.from_numpy(r._rays)
    cast = _times(lambda _: r._rcs.cast_rays(rays), poses)
    print(f"scene seed {a.seed}: {len(scene.objects)} objects; {a.width}x{a.height}; {len(poses)} frames; "
          f"{os.cpu_count()} cpus; renderer build {build:.1f} ms")
    print(f"render     median {np.median(full):.2f} ms/frame  p90 {np.percentile(full, 90):.2f}  "
          f"({1e3 / np.median(full):.0f} frames/s)")
    print(f"cast_rays  median {np.median(cast):.2f} ms/frame  p90 {np.percentile(cast, 90):.2f}")


if __name__ == "__main__":
    main()
