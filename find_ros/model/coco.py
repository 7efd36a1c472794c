"""COCO-format reader: instances + captions JSON -> samples with per-instance masks.

Masks come from polygons (filled with cv2) or run-length encoding (decoded here, both the
uncompressed ``counts`` list and the compressed ``counts`` string of the COCO API). No pycocotools.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import cv2
import numpy as np

__all__ = ["CocoError", "CocoInstance", "CocoSample", "CocoDataset", "rle_decode", "rle_string_to_counts", "polygons_to_mask"]

log = logging.getLogger(__name__)


class CocoError(ValueError):
    """A COCO file or annotation that cannot be read; the message names the file / annotation."""


@dataclasses.dataclass
class CocoInstance:
    """One annotated object."""

    id: int
    """COCO annotation id."""
    category: str
    """Category name (used as the phrase, e.g. ``"dining table"``)."""
    category_id: int
    """COCO category id."""
    mask: np.ndarray
    """(H, W) bool at the image's resolution."""
    box: tuple[float, float, float, float]
    """COCO ``bbox``: x, y, width, height in pixels."""
    iscrowd: bool
    """True for crowd regions (RLE masks over many objects)."""


@dataclasses.dataclass
class CocoSample:
    """One image with its instances and captions."""

    image_id: int
    """COCO image id."""
    image: np.ndarray
    """(H, W, 3) uint8 RGB."""
    instances: list[CocoInstance]
    """All annotations of the image (crowd ones included; filter with ``iscrowd``)."""
    captions: list[str]
    """Captions of the image (empty when no captions file was given)."""
    file_name: str
    """Image file name inside the image folder."""


def rle_string_to_counts(s: str) -> list[int]:
    """Decode the COCO compressed RLE string (6-bit groups, delta-coded from the third run) to run lengths."""
    counts: list[int] = []
    data = s.encode("ascii")
    p = 0
    while p < len(data):
        x = 0
        k = 0
        more = True
        while more:
            if p >= len(data):
                raise CocoError(f"truncated compressed RLE string at byte {p}")
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_decode(rle: dict) -> np.ndarray:
    """Decode a COCO RLE (``{"size": [h, w], "counts": list | str}``) to an (h, w) bool mask.

    Runs alternate background/foreground starting with background, in column-major order.
    """
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CocoError(f"RLE needs 'size' [h, w] and 'counts', got keys {list(rle)}") from exc
    if isinstance(counts, (str, bytes)):
        counts = rle_string_to_counts(counts.decode("ascii") if isinstance(counts, bytes) else counts)
    runs = np.asarray(counts, dtype=np.int64)
    if runs.size and (runs < 0).any():
        raise CocoError(f"RLE has negative run lengths: {runs[runs < 0][:5].tolist()}")
    total = int(runs.sum())
    if total != h * w:
        raise CocoError(f"RLE runs sum to {total}, expected h*w = {h}*{w} = {h * w}")
    values = (np.arange(runs.size) % 2).astype(bool)
    flat = np.repeat(values, runs)
    return flat.reshape(w, h).T.copy()


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Fill COCO polygons (lists of x, y pairs) into an (height, width) bool mask."""
    mask = np.zeros((height, width), np.uint8)
    pts = []
    for poly in polygons:
        arr = np.asarray(poly, dtype=np.float64)
        if arr.size < 6 or arr.size % 2:
            raise CocoError(f"polygon needs an even number >= 6 of coordinates, got {arr.size}")
        pts.append(np.round(arr.reshape(-1, 2)).astype(np.int32))
    cv2.fillPoly(mask, pts, 1)
    return mask.astype(bool)


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise CocoError(f"COCO annotation file not found: {path}")
    try:
        with path.open("r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise CocoError(f"{path} is not valid JSON: {exc}") from exc


class CocoDataset:
    """Random-access COCO samples: ``len(ds)``, ``ds[i] -> CocoSample`` (images decoded lazily)."""

    def __init__(
        self,
        *,
        instances_json: str | Path,
        image_dir: str | Path,
        captions_json: str | Path | None = None,
        skip_empty: bool = True,
    ) -> None:
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise CocoError(f"COCO image folder not found: {self.image_dir}")
        inst = _load_json(Path(instances_json))
        for key in ("images", "annotations", "categories"):
            if key not in inst:
                raise CocoError(f"{instances_json} lacks the '{key}' list")
        self.categories: dict[int, str] = {int(c["id"]): str(c["name"]) for c in inst["categories"]}
        self._images = {int(im["id"]): im for im in inst["images"]}
        self._anns: dict[int, list[dict]] = {}
        for a in inst["annotations"]:
            self._anns.setdefault(int(a["image_id"]), []).append(a)
        self._caps: dict[int, list[str]] = {}
        if captions_json is not None:
            for c in _load_json(Path(captions_json)).get("annotations", []):
                self._caps.setdefault(int(c["image_id"]), []).append(str(c["caption"]).strip())
        ids = sorted(self._images)
        if skip_empty:
            ids = [i for i in ids if self._anns.get(i)]
        self.image_ids: list[int] = ids

    def __len__(self) -> int:
        return len(self.image_ids)

    def _mask(self, ann: dict, h: int, w: int) -> np.ndarray:
        seg = ann.get("segmentation")
        if isinstance(seg, list):
            return polygons_to_mask(seg, h, w)
        if isinstance(seg, dict):
            m = rle_decode(seg)
            if m.shape != (h, w):
                raise CocoError(f"annotation {ann.get('id')}: RLE size {m.shape} != image size {(h, w)}")
            return m
        raise CocoError(f"annotation {ann.get('id')} has no usable segmentation ({type(seg).__name__})")

    def __getitem__(self, index: int) -> CocoSample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        image_id = self.image_ids[index]
        im = self._images[image_id]
        path = self.image_dir / im["file_name"]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise CocoError(f"cannot decode image {path}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        if (h, w) != (int(im["height"]), int(im["width"])):
            raise CocoError(f"{path}: decoded size {(h, w)} != annotated {(im['height'], im['width'])}")
        instances = []
        for a in self._anns.get(image_id, []):
            cid = int(a["category_id"])
            if cid not in self.categories:
                raise CocoError(f"annotation {a.get('id')} names unknown category id {cid}")
            instances.append(
                CocoInstance(
                    id=int(a["id"]),
                    category=self.categories[cid],
                    category_id=cid,
                    mask=self._mask(a, h, w),
                    box=tuple(float(v) for v in a.get("bbox", (0, 0, 0, 0))),
                    iscrowd=bool(a.get("iscrowd", 0)),
                )
            )
        return CocoSample(
            image_id=image_id,
            image=rgb,
            instances=instances,
            captions=list(self._caps.get(image_id, [])),
            file_name=str(im["file_name"]),
        )

    def resized(self, index: int, *, height: int, width: int, include_crowd: bool = False) -> CocoSample:
        """``self[index]`` resized to ``height`` x ``width`` (model input): image area-interpolated, masks nearest;
        instances whose mask vanishes at that size are dropped."""
        s = self[index]
        img = cv2.resize(s.image, (width, height), interpolation=cv2.INTER_AREA)
        sy, sx = height / s.image.shape[0], width / s.image.shape[1]
        keep = []
        for inst in s.instances:
            if inst.iscrowd and not include_crowd:
                continue
            m = cv2.resize(inst.mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
            if not m.any():
                continue
            x, y, w, h = inst.box
            keep.append(dataclasses.replace(inst, mask=m, box=(x * sx, y * sy, w * sx, h * sy)))
        return dataclasses.replace(s, image=img, instances=keep)

    @classmethod
    def from_root(cls, root: str | Path, *, split: str = "val2017", **kw) -> "CocoDataset":
        """Standard layout: ``root/annotations/{instances,captions}_<split>.json`` and ``root/<split>/``."""
        root = Path(root)
        caps = root / "annotations" / f"captions_{split}.json"
        return cls(
            instances_json=root / "annotations" / f"instances_{split}.json",
            image_dir=root / split,
            captions_json=caps if caps.is_file() else None,
            **kw,
        )
