"""Readers for recorded RGB-D folders (TUM RGB-D, 7-Scenes) and the simulator, as lazy frame sequences."""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from find_ros.geometry import pose_to_matrix as quat_to_matrix  # (4, 4) from translation (3,) and (qx, qy, qz, qw)

LOG = logging.getLogger(__name__)

TUM_INTRINSICS: dict[str, tuple[float, float, float, float]] = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
}
"""TUM colour camera intrinsics (fx, fy, cx, cy) by sequence prefix; ``TUM_DEFAULT`` otherwise."""
TUM_DEFAULT = (525.0, 525.0, 319.5, 239.5)
"""TUM's documented default intrinsics."""
SEVEN_SCENES_K = (585.0, 585.0, 320.0, 240.0)
"""7-Scenes default intrinsics (fx, fy, cx, cy)."""


class DatasetError(ValueError):
    """A dataset folder is missing, incomplete or malformed."""


@dataclass
class RGBDFrame:
    """One recorded RGB-D frame."""

    color: np.ndarray
    """(H, W, 3) uint8 RGB."""
    depth: np.ndarray
    """(H, W) float32 metres, 0.0 = invalid."""
    K: np.ndarray
    """(3, 3) float64 intrinsics of the colour camera."""
    T_world_cam: np.ndarray | None
    """(4, 4) float64 camera optical frame -> world, or None when the pose is unknown."""
    stamp_s: float
    """Recording time stamp, seconds."""
    index: int
    """Position in the sequence."""


def _K(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


class FrameSequence(Sequence):
    """Lazy sequence of ``RGBDFrame``: images are read from disk on access."""

    def __init__(self, items: list[dict], load: Callable[[dict, int], RGBDFrame], *, name: str) -> None:
        self._items, self._load, self.name = items, load, name

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return FrameSequence(self._items[i], self._load, name=self.name)
        n = len(self._items)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError(f"frame {i} out of range for {n} frames of {self.name}")
        return self._load(self._items[j], j)

    def __repr__(self) -> str:
        return f"FrameSequence({self.name!r}, {len(self)} frames)"


def _imread(path: Path, flags: int) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        raise DatasetError(f"cannot read image {path}")
    return img


def _rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(_imread(path, cv2.IMREAD_COLOR)[:, :, ::-1])


def _depth16(path: Path, scale: float, invalid: int | None = None) -> np.ndarray:
    d = _imread(path, cv2.IMREAD_UNCHANGED)
    if d.dtype != np.uint16 or d.ndim != 2:
        raise DatasetError(f"depth image {path} must be single-channel 16-bit, got {d.dtype} shape {d.shape}")
    out = d.astype(np.float32) / np.float32(scale)
    if invalid is not None:
        out[d == invalid] = 0.0
    return out


def _read_table(path: Path) -> list[list[str]]:
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split())
    return rows


def _read_K_file(path: Path) -> np.ndarray:
    try:
        vals = np.array([float(v) for r in _read_table(path) for v in r])
    except ValueError as e:
        raise DatasetError(f"intrinsics file {path} is not numeric: {e}") from e
    if vals.size == 9:
        return vals.reshape(3, 3)
    if vals.size == 4:
        return _K(*vals)
    raise DatasetError(f"intrinsics file {path} must hold a 3x3 matrix or fx fy cx cy, got {vals.size} numbers")


def _select(items: list, max_frames: int | None, stride: int) -> list:
    if stride < 1:
        raise DatasetError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 0:
        raise DatasetError(f"max_frames must be >= 0, got {max_frames}")
    items = items[::stride]
    return items if max_frames is None else items[:max_frames]


def _nearest(stamps: np.ndarray, query: np.ndarray, max_dt: float) -> np.ndarray:
    """Index into sorted ``stamps`` nearest to each ``query``, -1 when further than ``max_dt``."""
    if len(stamps) == 0:
        return np.full(len(query), -1)
    j = np.clip(np.searchsorted(stamps, query), 1, max(len(stamps) - 1, 1))
    j0 = np.clip(j - 1, 0, len(stamps) - 1)
    pick = np.where(np.abs(stamps[j0] - query) <= np.abs(stamps[j] - query), j0, j)
    return np.where(np.abs(stamps[pick] - query) <= max_dt, pick, -1)


def _tum_sequence_dir(root: Path, rel: str) -> Path:
    for base in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if (base / rel).is_file():
            return base
    raise DatasetError(f"TUM folder {root}: image {rel} not found in it or its sub-folders")


def _tum_items_from_associations(root: Path, assoc: Path) -> tuple[Path, list[dict]]:
    """Frames of an ``associations_subset.txt`` (4 or 12 columns) and the sequence folder its images are in."""
    rows = _read_table(assoc)
    if not rows:
        raise DatasetError(f"{assoc} has no rows")
    base = _tum_sequence_dir(root, rows[0][1])
    items: list[dict] = []
    for r in rows:
        if len(r) not in (4, 12):
            raise DatasetError(f"{assoc}: expected 4 or 12 columns, got {len(r)}: {' '.join(r)}")
        pose = quat_to_matrix([float(v) for v in r[5:8]], [float(v) for v in r[8:12]]) if len(r) == 12 else None
        items.append({"rgb": base / r[1], "depth": base / r[3], "stamp": float(r[0]), "pose": pose})
    return base, items


def _tum_ground_truth(root: Path) -> np.ndarray:
    """``groundtruth.txt`` rows (t tx ty tz qx qy qz qw) sorted by stamp; (0, 8) when the file is absent."""
    gt_path = root / "groundtruth.txt"
    gt = np.array([[float(v) for v in r] for r in _read_table(gt_path)]) if gt_path.is_file() else np.zeros((0, 8))
    if gt.size and gt.shape[1] != 8:
        raise DatasetError(f"{gt_path}: expected 8 columns (t tx ty tz qx qy qz qw), got {gt.shape[1]}")
    return gt[np.argsort(gt[:, 0])] if gt.size else gt


def _tum_items_from_lists(root: Path, max_dt: float) -> list[dict]:
    """Frames of rgb.txt / depth.txt / groundtruth.txt, paired by nearest stamp within ``max_dt`` s."""
    for name in ("rgb.txt", "depth.txt"):
        if not (root / name).is_file():
            raise DatasetError(f"TUM folder {root} has neither associations_subset.txt nor {name}")
    rgb = [(float(r[0]), r[1]) for r in _read_table(root / "rgb.txt")]
    dep = [(float(r[0]), r[1]) for r in _read_table(root / "depth.txt")]
    rgb = [e for e in rgb if (root / e[1]).is_file()]
    dep = [e for e in dep if (root / e[1]).is_file()]
    dep.sort()
    rs = np.array([e[0] for e in rgb])
    di = _nearest(np.array([e[0] for e in dep]), rs, max_dt)
    gt = _tum_ground_truth(root)
    gi = _nearest(gt[:, 0], rs, max_dt) if gt.size else np.full(len(rs), -1)
    items: list[dict] = []
    for (ts, f), k, g in zip(rgb, di, gi):
        if k < 0:
            continue
        pose = quat_to_matrix(gt[g, 1:4], gt[g, 4:8]) if g >= 0 else None
        items.append({"rgb": root / f, "depth": root / dep[k][1], "stamp": ts, "pose": pose})
    return items


def _tum_intrinsics(root: Path, base: Path) -> np.ndarray:
    """``intrinsics.txt`` in the folder or its parent, else by the freiburg number in the sequence folder name."""
    kfile = next((p for p in (root / "intrinsics.txt", root.parent / "intrinsics.txt") if p.is_file()), None)
    if kfile is not None:
        return _read_K_file(kfile)
    key = next((k for k in TUM_INTRINSICS if k in str(base)), None)
    return _K(*(TUM_INTRINSICS[key] if key else TUM_DEFAULT))


def read_tum(path, *, max_frames: int | None = None, stride: int = 1, depth_scale: float = 5000.0,
             K: np.ndarray | None = None, max_dt: float = 0.02) -> FrameSequence:
    """TUM RGB-D folder as a lazy sequence of ``RGBDFrame``.

    ``path`` is a sequence folder (rgb.txt, depth.txt, groundtruth.txt) or a folder holding
    ``associations_subset.txt`` (rgb_ts rgb depth_ts depth gt_ts tx ty tz qx qy qz qw) next to the sequence.
    Colour and depth are paired by nearest stamp within ``max_dt`` s, poses likewise (None when absent);
    entries whose files are missing are skipped. K: argument, else ``intrinsics.txt`` (in the folder or its
    parent), else by the freiburg number in the folder name.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"TUM folder {root} does not exist")
    assoc = root / "associations_subset.txt"
    if assoc.is_file():
        base, items = _tum_items_from_associations(root, assoc)
    else:
        base, items = root, _tum_items_from_lists(root, max_dt)
    K = np.asarray(_tum_intrinsics(root, base) if K is None else K, dtype=np.float64)
    items = _select(items, max_frames, stride)
    missing = [str(it["rgb"]) for it in items if not it["rgb"].is_file()][:3]
    if missing:
        raise DatasetError(f"TUM folder {root}: listed images missing, e.g. {missing}")

    def load(it: dict, i: int) -> RGBDFrame:
        return RGBDFrame(color=_rgb(it["rgb"]), depth=_depth16(it["depth"], depth_scale), K=K.copy(),
                         T_world_cam=None if it["pose"] is None else it["pose"].copy(), stamp_s=it["stamp"], index=i)

    LOG.info("TUM %s: %d frames, %d with poses", root, len(items), sum(it["pose"] is not None for it in items))
    return FrameSequence(items, load, name=str(root))


_FRAME_RE = re.compile(r"frame-(\d+)\.color\.(png|jpg)$")
"""A 7-Scenes colour frame: ``frame-XXXXXX.color.png`` as published, or ``.color.jpg`` as some copies store it."""


def read_7scenes(path, *, max_frames: int | None = None, stride: int = 1, K: np.ndarray | None = None,
                 fps: float = 30.0) -> FrameSequence:
    """7-Scenes sequence folder (``frame-XXXXXX.color.png`` or ``.color.jpg``, ``.depth.png`` in mm with 65535
    invalid, ``.pose.txt`` 4x4 camera -> world) as a lazy sequence; a scene folder with ``seq-*`` sub-folders reads
    them in order. A frame stored both as png and jpg is read from the png (lossless). Stamps are ``index / fps``.
    Depth is used as stored (7-Scenes does not register it to colour)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"7-Scenes folder {root} does not exist")
    has_frames = any(_FRAME_RE.fullmatch(p.name) for p in root.glob("frame-*.color.*"))
    dirs = [root] if has_frames else sorted(p for p in root.glob("seq-*") if p.is_dir())
    items: list[dict] = []
    for d in dirs:
        colour: dict[str, tuple[int, Path]] = {}  # frame stem -> (frame number, colour file); png wins over jpg
        for p in d.iterdir():
            m = _FRAME_RE.fullmatch(p.name)
            if m is not None:
                stem = p.name[: -len(f".color.{m.group(2)}")]
                if stem not in colour or m.group(2) == "png":
                    colour[stem] = (int(m.group(1)), p)
        for stem, (_, p) in sorted(colour.items(), key=lambda kv: kv[1][0]):
            items.append({"rgb": p, "depth": d / f"{stem}.depth.png", "pose": d / f"{stem}.pose.txt"})
    if not items:
        raise DatasetError(f"7-Scenes folder {root} holds no frame-XXXXXX.color.png or frame-XXXXXX.color.jpg "
                           "(nor seq-* folders with them)")
    K = _K(*SEVEN_SCENES_K) if K is None else np.asarray(K, dtype=np.float64)
    items = [dict(it, n=i) for i, it in enumerate(items)]
    items = _select(items, max_frames, stride)

    def load(it: dict, i: int) -> RGBDFrame:
        if not it["depth"].is_file():
            raise DatasetError(f"7-Scenes depth image {it['depth']} missing")
        T = None
        if it["pose"].is_file():
            try:
                T = np.loadtxt(it["pose"], dtype=np.float64)
            except ValueError as e:
                raise DatasetError(f"pose file {it['pose']} is not numeric: {e}") from e
            if T.shape != (4, 4):
                raise DatasetError(f"pose file {it['pose']} must hold a 4x4 matrix, got shape {T.shape}")
            if not np.all(np.isfinite(T)):
                T = None
        return RGBDFrame(color=_rgb(it["rgb"]), depth=_depth16(it["depth"], 1000.0, invalid=65535), K=K.copy(),
                         T_world_cam=T, stamp_s=it["n"] / fps, index=i)

    return FrameSequence(items, load, name=str(root))


class SimSequence(Sequence):
    """Simulated stream (``Scene.generate(seed)`` along a trajectory of ``n_frames`` poses, then ``stride`` and
    ``max_frames`` as for the recorded readers) as a lazy ``RGBDFrame`` sequence."""

    def __init__(self, seed: int, *, n_frames: int = 300, trajectory: str = "orbit", width: int = 640,
                 height: int = 480, fps: float = 30.0, max_frames: int | None = None, stride: int = 1,
                 scene_kw: dict | None = None, **renderer_kw) -> None:
        from .render import SimRenderer
        from .scene import Scene
        from .trajectory import orbit_trajectory, walkthrough_trajectory

        if trajectory not in ("orbit", "walk"):
            raise DatasetError(f"trajectory must be 'orbit' or 'walk', got {trajectory!r}")
        self.scene = Scene.generate(int(seed), **(scene_kw or {}))
        self.poses = (orbit_trajectory(self.scene, n_frames) if trajectory == "orbit"
                      else walkthrough_trajectory(self.scene, n_frames, seed=int(seed)))
        self._frame_no = _select(list(range(len(self.poses))), max_frames, stride)
        self.renderer = SimRenderer(self.scene, width=width, height=height, **renderer_kw)
        self.fps = float(fps)

    def __len__(self) -> int:
        return len(self._frame_no)

    def __getitem__(self, i: int) -> RGBDFrame:
        n = len(self._frame_no)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError(f"frame {i} out of range for {n} simulated frames")
        k = self._frame_no[j]
        f = self.renderer.render(self.poses[k], index=k, time_s=k / self.fps)
        return RGBDFrame(color=f.color, depth=f.depth, K=f.K, T_world_cam=f.T_world_cam, stamp_s=f.time_s, index=j)


def open_dataset(fmt: str, path_or_seed, **kw) -> Sequence[RGBDFrame]:
    """``fmt`` "tum" | "7scenes" (a folder) or "sim" (an int seed, keywords of ``SimSequence``)."""
    if fmt == "tum":
        return read_tum(path_or_seed, **kw)
    if fmt == "7scenes":
        return read_7scenes(path_or_seed, **kw)
    if fmt == "sim":
        try:
            seed = int(path_or_seed)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"sim dataset needs an integer seed, got {path_or_seed!r}") from e
        return SimSequence(seed, **kw)
    raise DatasetError(f"unknown dataset format {fmt!r}; expected 'tum', '7scenes' or 'sim'")
