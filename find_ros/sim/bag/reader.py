"""Reading a rosbag2 recording (sqlite3 or mcap) as RGB-D frames with ``rosbags``: :class:`RgbdBag`."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from find_ros.sim.bag.config import (AUTO_POSE_TOPICS, CAMERA_INFO_TYPE, COMPRESSED_TYPE, IMAGE_TYPE, POSE_TYPES,
                                     TF_TYPE, BagConfig, BagCounts, BagError, BagFrame, topic_name)
from find_ros.sim.bag.decode import default_typestore, resolve_bag_path
from find_ros.sim.bag.pairing import BagPass

LOG = logging.getLogger(__name__)

__all__ = ["RgbdBag"]


class RgbdBag:
    """A rosbag2 recording read as RGB-D frames (see the module docstring); a context manager.

    ``frames()`` makes one pass (call it again to replay); :attr:`counts` holds the counters of the latest pass.
    """

    def __init__(self, path: str | Path, config: BagConfig | None = None) -> None:
        from rosbags.rosbag2 import Reader

        self.config = config or BagConfig()
        self.path = resolve_bag_path(path)
        self._reader = Reader(self.path)
        try:
            self._reader.open()
        except Exception as e:  # noqa: BLE001 - rosbags raises several kinds for an unreadable bag
            raise BagError(f"cannot open bag {str(self.path)!r}: {type(e).__name__}: {e}") from e
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        self.counts = BagCounts()

    def _setup(self) -> None:
        cfg = self.config
        self.connections = {c.topic: c for c in self._reader.connections}
        self.typestore = self._typestore()

        def conn(topic: str, stream: str, types: tuple[str, ...]) -> Any:
            c = self.connections.get(topic_name(topic))
            if c is None:
                raise BagError(f"bag {self.path.name}: no {stream} topic {topic_name(topic)!r}; recorded: "
                               + ", ".join(f"{t} ({c.msgtype})" for t, c in sorted(self.connections.items())))
            if c.msgtype not in types:
                raise BagError(f"bag {self.path.name}: {stream} topic {c.topic} has type {c.msgtype}, expected "
                               + " or ".join(types))
            return c

        self.color_conn = conn(cfg.color_topic, "colour", (IMAGE_TYPE, COMPRESSED_TYPE))
        self.depth_conn = conn(cfg.depth_topic, "depth", (IMAGE_TYPE,))
        self.info_conn = conn(cfg.camera_info_topic, "camera_info", (CAMERA_INFO_TYPE,))
        self.pose_topic, self.pose_type = "", ""
        if cfg.pose_topic == "auto":
            for t in AUTO_POSE_TOPICS:
                c = self.connections.get(t)
                if c is not None and c.msgtype in POSE_TYPES:
                    self.pose_topic, self.pose_type = c.topic, c.msgtype
                    break
        elif cfg.pose_topic:
            c = conn(cfg.pose_topic, "camera pose", POSE_TYPES)
            self.pose_topic, self.pose_type = c.topic, c.msgtype
        self._streams = {self.color_conn.topic: "color", self.depth_conn.topic: "depth",
                         self.info_conn.topic: "camera_info"}
        if self.pose_topic:
            self._streams[self.pose_topic] = "pose"
            static = self.connections.get("/tf_static")
            if self.pose_type == TF_TYPE and static is not None and static.msgtype == TF_TYPE:
                self._streams[static.topic] = "tf_static"

    def _typestore(self) -> Any:
        """The standard typestore plus the definitions the bag carries (they win for the types they define)."""
        from rosbags.interfaces import MessageDefinitionFormat
        from rosbags.typesys import get_types_from_idl, get_types_from_msg

        store = default_typestore()
        types: dict = {}
        for c in self._reader.connections:
            try:
                if c.msgdef.format == MessageDefinitionFormat.MSG and c.msgdef.data:
                    types.update(get_types_from_msg(c.msgdef.data, c.msgtype))
                elif c.msgdef.format == MessageDefinitionFormat.IDL and c.msgdef.data:
                    sep = "=" * 80 + "\n"
                    for part in c.msgdef.data.split(sep):
                        if part.startswith("IDL: "):
                            part = part.split("\n", 1)[1]
                        if part.strip():
                            types.update(get_types_from_idl(part))
            except Exception as e:  # noqa: BLE001 - an unparsable embedded definition: use the standard one
                LOG.warning("bag %s: message definition of %s (%s) not usable (%s); using the standard one",
                            self.path.name, c.topic, c.msgtype, e)
        if types:
            try:
                store.register(types)
            except Exception as e:  # noqa: BLE001 - a definition conflicting with the standard store
                LOG.warning("bag %s: embedded message definitions not registered (%s); using the standard ones",
                            self.path.name, e)
        return store

    # -- facts about the bag
    @property
    def color_count(self) -> int:
        """Colour messages recorded (an upper bound of the frames of one pass)."""
        return int(self.color_conn.msgcount)

    @property
    def duration_s(self) -> float:
        return float(self._reader.duration) * 1e-9

    def reliability(self, topic: str | None = None) -> str | None:
        """``reliable`` / ``best_effort`` as recorded in the offered QoS profiles of ``topic`` (default: colour);
        best effort when any recorded publisher was best effort (``ros2 bag play`` adapts the same way), None
        when the bag does not say."""
        from rosbags.interfaces import QosReliability

        c = self.connections.get(topic_name(topic)) if topic else self.color_conn
        profiles = list(getattr(getattr(c, "ext", None), "offered_qos_profiles", []) or [])
        rel = {p.reliability for p in profiles}
        if QosReliability.BEST_EFFORT in rel:
            return "best_effort"
        if QosReliability.RELIABLE in rel:
            return "reliable"
        return None

    def describe(self) -> str:
        pose = f"pose {self.pose_topic} ({self.pose_type.split('/')[-1]})" if self.pose_topic else "no pose topic"
        return (f"{self.path.name}: {self.color_count} colour messages on {self.color_conn.topic}, "
                f"{self.duration_s:.1f} s, {pose}, recorded {self.reliability() or 'with unknown QoS'}")

    # -- reading
    def frames(self, *, log: bool = True) -> Iterator[BagFrame]:
        """One pass over the bag in recording order: the frames that pair up (malformed ones skipped, counted in
        :attr:`counts`; logged unless ``log`` is False, e.g. on the second pass of a loop)."""
        p = BagPass(self, log=log)
        self.counts = p.counts
        conns = [self.connections[t] for t in self._streams]
        for c, log_ns, raw in self._reader.messages(connections=conns):
            p.add(self._streams[c.topic], c.topic, c.msgtype, int(log_ns), raw)
            yield from p.ready(int(log_ns))
        yield from p.ready(None)
        (LOG.info if log else LOG.debug)("bag %s: %d frames from %d colour messages; malformed %s, unpaired %s, frames without pose %d",
                 self.path.name, p.counts.frames, p.counts.messages.get("color", 0), p.counts.malformed or "none",
                 p.counts.unpaired or "none", p.counts.no_pose)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> "RgbdBag":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
