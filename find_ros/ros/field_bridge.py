"""The feature field inside the perception node: fed with grounded frames, published, queried, saved.

Owned by a lifecycle node (the perception node creates it when ``field_enable`` is true):

- ``create(node, params, instruction=callable)`` at configure: the lifecycle publishers
  ``find/field/cloud`` (transient-local: observed voxels, xyz + rgb + ``score`` = similarity to the
  current instruction, 0 without one), ``find/field/goal`` (best goal of the last query, PoseStamped)
  and ``find/field/heatmap`` (transient-local, xyz + rgb heat colour + score of the last query);
- ``activate(grounder)``: the field's embeddings come from the grounder (:class:`FieldEmbedder`):
  its dimension D sets the field's (``field_embedding_dim`` 0 = follow it, otherwise it must match);
  ``field_max_blocks`` and ``field_memory_mb`` set its block cap (:func:`field_config`); its storage
  grows with the blocks fused, and ``find/status`` reports it (:func:`field_counters`);
  starts the fusion worker, the publish timer and the services ``find/field/query`` (QueryField),
  ``find/field/save`` / ``find/field/load`` (FieldFile) and ``find/field/clear`` (Trigger);
- ``feed(rgb, depth_m, K, T_world_cam, pixel_embeddings=None)`` from the grounding worker: a one-slot
  mailbox (newest frame wins) read by the fusion thread, so fusion never blocks grounding; frames
  without a camera pose are not fused (throttled warning). Without pixel embeddings (no instruction
  yet) the fusion thread asks the grounder for them;
- ``deactivate()`` / ``destroy()`` undo them. The field itself survives deactivate/activate.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion, Vector3
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from find_ros.config_fields import from_prefixed
from find_ros.field import FeatureField, FieldConfig, FieldEmbedder, FieldInputError
from find_ros.field.config import FieldBridgeConfig
from find_ros.instruction import Instruction, InstructionError, parse_instruction
from find_ros.ros import conversions as conv
from find_ros.ros.endpoints import answers_errors, destroy_endpoints
from find_ros.ros.latest_worker import LatestWorker
from find_ros.ros.params import PARAMS_BY_NAME
from find_ros.ros.qos import LATCHED_QOS, OUTPUT_QOS
from find_ros.ros.references import instruction_from_msg, references_from_msgs
from find_ros.srv import FieldFile, QueryField

LOG = logging.getLogger(__name__)

__all__ = ["FieldBridge", "FieldBridgeError", "CLOUD_TOPIC", "GOAL_TOPIC", "HEATMAP_TOPIC", "QUERY_SERVICE",
           "SAVE_SERVICE", "LOAD_SERVICE", "CLEAR_SERVICE", "heat_colours", "field_config", "field_counters"]

CLOUD_TOPIC = "find/field/cloud"
GOAL_TOPIC = "find/field/goal"
HEATMAP_TOPIC = "find/field/heatmap"
QUERY_SERVICE = "find/field/query"
SAVE_SERVICE = "find/field/save"
LOAD_SERVICE = "find/field/load"
CLEAR_SERVICE = "find/field/clear"


_never_raises = answers_errors("field")  # service callbacks answer their errors (find_ros.ros.endpoints)


FIELD_PREFIX = "field_"
"""Prefix of the node parameters derived from :class:`FieldBridgeConfig` (``field_voxel_size``, ...)."""


class FieldBridgeError(RuntimeError):
    """The field cannot run with this grounder / these parameters; the message says why."""


def heat_colours(score: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 blue (low) -> red (high) colours of scores, normalised over their own range."""
    s = np.asarray(score, np.float32)
    if s.size == 0:
        return np.zeros((0, 3), np.uint8)
    lo, hi = float(s.min()), float(s.max())
    t = (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)
    return np.stack([255 * t, 255 * (1 - np.abs(2 * t - 1)), 255 * (1 - t)], axis=1).astype(np.uint8)


def bridge_config(params: dict[str, Any]) -> FieldBridgeConfig:
    """The :class:`FieldBridgeConfig` of the ``field_*`` parameter values in ``params`` (others: its defaults)."""
    return from_prefixed(FieldBridgeConfig, params, FIELD_PREFIX)


def field_config(params: dict[str, Any], *, embedding_dim: int) -> FieldConfig:
    """The field's config from node parameters: ``field_voxel_size``, ``field_max_blocks`` and ``field_memory_mb``
    (0 = no budget; otherwise the block cap is the smaller of ``field_max_blocks`` and what fits in the budget).

    Raises :class:`FieldBridgeError` naming the parameters when they do not make a field (e.g. a budget too small
    for one block of this D).
    """
    try:
        c = bridge_config(params)
        return FieldConfig(voxel_size=c.voxel_size, max_blocks=c.max_blocks, memory_mb=c.budget_mb,
                           embedding_dim=embedding_dim)
    except FieldInputError as e:
        raise FieldBridgeError(f"field_memory_mb={params.get('field_memory_mb', 0.0)!r}, "
                               f"field_max_blocks={params.get('field_max_blocks', FieldBridgeConfig.max_blocks)!r}, "
                               f"D={embedding_dim}: {e}") from e


def field_counters(ff: FeatureField | None) -> dict[str, int | float]:
    """Memory figures of a field for find/status (cheap: no voxel scan); zeros without a field.

    field_active_blocks / field_memory_bytes: blocks in the field and their voxel storage;
    field_allocated_blocks / field_reserved_bytes: storage handed out so far (high-water mark of blocks) and the
    memory the field holds (that storage plus the block hash map), which grows with use;
    field_block_cap: blocks kept after each frame; field_capacity_blocks / field_capacity_bytes: the most the
    storage can grow to; field_budget_mb: the field_memory_mb budget (0 = none).
    """
    if ff is None:
        return {"field_active_blocks": 0, "field_memory_bytes": 0, "field_allocated_blocks": 0,
                "field_reserved_bytes": 0, "field_block_cap": 0, "field_capacity_blocks": 0,
                "field_capacity_bytes": 0, "field_budget_mb": 0.0}
    return {"field_active_blocks": ff.active_blocks, "field_memory_bytes": ff.memory_bytes,
            "field_allocated_blocks": ff.allocated_blocks, "field_reserved_bytes": ff.reserved_bytes,
            "field_block_cap": ff.block_cap, "field_capacity_blocks": ff.capacity_blocks,
            "field_capacity_bytes": ff.capacity_bytes, "field_budget_mb": float(ff.config.memory_mb or 0.0)}


class FieldBridge:
    """One feature field with its fusion worker, publishers, timer and services on ``node``."""

    def __init__(self, *, node: Any, params: dict[str, Any],
                 instruction: Callable[[], Instruction | None] = lambda: None,
                 resolve: Callable[..., Any] | None = None) -> None:
        self._node = node
        self._p = params  # node-level values it reads: world_frame, log_throttle_s, max_image_pixels
        self.config = bridge_config(params)
        self._instruction = instruction
        self._resolve = resolve  # "<name>" -> stored references (ReferenceBridge.resolve), None = names not known
        self.field: FeatureField | None = None
        self.embedder: FieldEmbedder | None = None
        self._lock = threading.Lock()  # guards self.field
        self._pubs = {"cloud": node.create_lifecycle_publisher(PointCloud2, CLOUD_TOPIC, LATCHED_QOS),
                      "goal": node.create_lifecycle_publisher(PoseStamped, GOAL_TOPIC, OUTPUT_QOS),
                      "heatmap": node.create_lifecycle_publisher(PointCloud2, HEATMAP_TOPIC, LATCHED_QOS)}
        self._timer: Any = None
        self._srvs: list[Any] = []
        self._worker = LatestWorker(self._work, name="find_ros-field")  # one-slot mailbox: newest frame wins
        self._version = 0  # bumped by every change of the field (fusion, load, clear)
        self._published: tuple | None = None
        self.frames = 0
        """Frames fused."""
        self.dropped = 0
        """Posed frames replaced in the mailbox before the fusion thread took them."""
        self.skipped_no_pose = 0
        """Frames not fused for lack of a camera pose."""
        self.errors = 0

    @classmethod
    def create(cls, node: Any, params: dict[str, Any], instruction: Callable[[], Instruction | None] = lambda: None,
               resolve: Callable[..., Any] | None = None) -> "FieldBridge | None":
        return cls(node=node, params=params, instruction=instruction, resolve=resolve) \
            if bridge_config(params).enable else None

    # ------------------------------------------------------------------ lifecycle
    def activate(self, grounder: Any) -> None:
        """Bind the grounder's embeddings (checks D), start the fusion thread, timer and services."""
        embedder = FieldEmbedder(grounder=grounder)
        want = self.config.embedding_dim
        if want and want != embedder.dim:
            raise FieldBridgeError(f"field_embedding_dim={want} but grounder {embedder.name!r} embeds in "
                                   f"D={embedder.dim}; set field_embedding_dim to 0 (follow the grounder) or {embedder.dim}")
        with self._lock:
            if self.field is not None and self.field.config.embedding_dim != embedder.dim:
                LOG.warning("grounder %s embeds in D=%d, the field has D=%d: starting a new field",
                            embedder.name, embedder.dim, self.field.config.embedding_dim)
                self.field = None
            if self.field is None:
                self.field = FeatureField(config=field_config(self._p, embedding_dim=embedder.dim))
                self._version += 1
                ff = self.field
                budget = f"field_memory_mb {ff.config.memory_mb:g}" if ff.config.memory_mb else "no field_memory_mb"
                self._node.get_logger().info(
                    f"feature field: voxel {ff.config.voxel_size} m, D={embedder.dim}, cap {ff.block_cap} blocks "
                    f"(field_max_blocks {ff.config.max_blocks}, {budget}): {ff.reserved_bytes / 2**20:.1f} MB "
                    f"reserved now, grows with the blocks fused up to {ff.capacity_bytes / 2**20:.0f} MB")
        self.embedder = embedder
        n = self._node
        self._worker.start()
        self._timer = n.create_timer(self.config.publish_period_s, self.publish)
        self._published = None  # publish once after (re)activation
        self._srvs = [n.create_service(QueryField, QUERY_SERVICE, self._srv_query),
                      n.create_service(FieldFile, SAVE_SERVICE, self._srv_save),
                      n.create_service(FieldFile, LOAD_SERVICE, self._srv_load),
                      n.create_service(Trigger, CLEAR_SERVICE, self._srv_clear)]

    def deactivate(self) -> None:
        self._worker.stop()
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
        destroy_endpoints(self._node, services=self._srvs)
        self._timer, self._srvs = None, []
        self.embedder = None

    def destroy(self) -> None:
        self.deactivate()
        for p in self._pubs.values():
            self._node.destroy_lifecycle_publisher(p)
        self._pubs = {}

    # ------------------------------------------------------------------ fusion
    def feed(self, rgb: np.ndarray, depth_m: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray | None,
             pixel_embeddings: np.ndarray | None = None) -> None:
        """Hand a frame to the fusion thread (newest wins); never blocks on fusion."""
        if T_world_cam is None:
            self.skipped_no_pose += 1
            self._node.get_logger().warning(
                f"frame without a camera pose: grounded but not fused into the field "
                f"({self.skipped_no_pose} so far)", throttle_duration_sec=float(self._p.get("log_throttle_s", 5.0)))
            return
        if self._worker.put((rgb, depth_m, K, T_world_cam, pixel_embeddings)):
            self.dropped += 1

    def counters(self) -> dict:
        """Field counters for the node's find/status JSON (cheap: no voxel scan)."""
        return {"field_frames": self.frames, "field_dropped": self.dropped,
                "field_skipped_no_pose": self.skipped_no_pose, "field_errors": self.errors,
                **field_counters(self.field)}

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once the mailbox is empty and no frame is being fused (tests, shutdown)."""
        return self._worker.wait_idle(timeout)

    def _work(self, item: tuple) -> None:
        try:
            self._fuse(*item)
        except Exception as e:  # never let one frame kill the fusion thread
            self.errors += 1
            self._node.get_logger().error(f"field fusion failed, frame skipped: {type(e).__name__}: {e}",
                                          throttle_duration_sec=float(self._p.get("log_throttle_s", 5.0)))

    def _fuse(self, rgb, depth_m, K, T, pe) -> None:
        emb = self.embedder
        if emb is None:
            return
        pe = emb.pixel_embeddings(rgb) if pe is None else emb.check_pixels(pe)
        with self._lock:
            self.field.integrate(np.asarray(depth_m, np.float32), K, T, pixel_embeddings=pe, color=rgb)
            self._version += 1
        self.frames += 1

    # ------------------------------------------------------------------ outputs
    def _header(self) -> Header:
        return Header(frame_id=self._p["world_frame"], stamp=self._node.get_clock().now().to_msg())

    def _scores_for(self, instruction: Instruction | None) -> np.ndarray | None:
        """Similarity per observed voxel to ``instruction`` (call with the lock held); None without one."""
        if instruction is None or self.embedder is None or self.field.num_voxels == 0:
            return None
        return self.field.similarity(self.embedder.embed_instruction(instruction))

    def cloud(self) -> PointCloud2:
        """The field as xyz + rgb + score (similarity to the current instruction, 0 without one)."""
        instruction = self._instruction()
        with self._lock:
            p = self.field.points()
            try:
                s = self._scores_for(instruction)
            except Exception as e:
                self._node.get_logger().error(f"field cloud: cannot embed the instruction: {e}",
                                              throttle_duration_sec=5.0)
                s = None
        if s is None:
            s = np.zeros(p["xyz"].shape[0], np.float32)
        return conv.points_to_cloud2(p["xyz"], header=self._header(), rgb=p["rgb"], score=s)

    def publish(self) -> None:
        """Publish the field cloud when the field or the instruction changed since the last one."""
        if not self._pubs or self.field is None:
            return
        ins = self._instruction()
        last = self._published
        if last is not None and last[0] == self._version and last[1] is ins:  # the object, not its id (reused)
            return
        self._pubs["cloud"].publish(self.cloud())
        self._published = (self._version, ins)

    # ------------------------------------------------------------------ services
    def _request_instruction(self, req) -> Instruction:
        """The query's instruction: ``req.instruction`` (validated like the node's, :mod:`find_ros.ros.references`)
        when its text is set, else ``req.text``; ``<name>`` placeholders name stored references like the node's."""
        ins = req.instruction
        if ins.text.strip():
            max_px = self._p.get("max_image_pixels", PARAMS_BY_NAME["max_image_pixels"].default)
            if self._resolve is not None:
                refs = references_from_msgs(ins.reference_images, ins.reference_masks, max_pixels=max_px)
                return self._resolve(ins.text, refs, id=ins.id or "field-query").instruction
            return instruction_from_msg(ins.text, ins.reference_images, ins.reference_masks,
                                        id=ins.id or "field-query", max_pixels=max_px)
        if not req.text.strip():
            raise InstructionError("empty query: give text or instruction.text")
        if self._resolve is not None:
            return self._resolve(req.text, (), id="field-query").instruction
        return parse_instruction(req.text, [], id="field-query")

    @_never_raises
    def _srv_query(self, req, resp):
        try:
            instruction = self._request_instruction(req)
            q = self.embedder.embed_instruction(instruction)
        except Exception as e:
            resp.success, resp.message = False, f"query rejected: {type(e).__name__}: {e}"
            return resp
        max_goals = int(req.max_goals) if req.max_goals > 0 else self.config.max_goals
        with self._lock:
            res = self.field.query(q, max_goals=max_goals)
        hdr = self._header()
        for g in res.goals:
            resp.goals.append(PoseStamped(header=hdr, pose=Pose(
                position=Point(x=float(g.position[0]), y=float(g.position[1]), z=float(g.position[2])),
                orientation=Quaternion(w=1.0))))
            resp.scores.append(float(g.score))
            resp.extents.append(Vector3(x=float(g.extent[0]), y=float(g.extent[1]), z=float(g.extent[2])))
        resp.heatmap = conv.points_to_cloud2(res.xyz, header=hdr, rgb=heat_colours(res.scores),
                                             score=np.asarray(res.scores, np.float32))
        if self._pubs:
            self._pubs["heatmap"].publish(resp.heatmap)
            if resp.goals:
                self._pubs["goal"].publish(resp.goals[0])
        resp.success = bool(resp.goals)
        resp.message = (f"{len(resp.goals)} goal(s) for {instruction.text!r} over {res.xyz.shape[0]} voxels"
                        if resp.goals else f"no goal for {instruction.text!r} ({res.xyz.shape[0]} voxels in the field)")
        return resp

    def _path(self, req) -> str:
        return req.path or self.config.path

    @_never_raises
    def _srv_save(self, req, resp):
        path = self._path(req)
        if not path:
            resp.success, resp.message = False, "no path in the request and field_path is empty: nothing saved"
            return resp
        try:
            with self._lock:
                self.field.save(path)
                n = self.field.num_voxels
        except OSError as e:
            resp.success, resp.message = False, f"save to {path} failed (previous file untouched): {e}"
            return resp
        resp.success, resp.message, resp.num_voxels = True, f"saved {n} voxels to {path}", n
        return resp

    @_never_raises
    def _srv_load(self, req, resp):
        path = self._path(req)
        if not path:
            resp.success, resp.message = False, "no path in the request and field_path is empty: nothing loaded"
            return resp
        if not Path(path).is_file():
            resp.success, resp.message = False, f"no field file at {path}: current field kept"
            return resp
        try:  # the node's cap and budget, not the file's, bound the loaded field
            ff = FeatureField.load(path, max_blocks=self.config.max_blocks,
                                     memory_mb=self.config.budget_mb)
        except Exception as e:  # corrupt/foreign file, or more blocks than this node's cap keeps
            resp.success, resp.message = False, f"cannot load {path}: {type(e).__name__}: {e}; current field kept"
            return resp
        d = self.embedder.dim if self.embedder is not None else ff.config.embedding_dim
        if ff.config.embedding_dim != d:
            resp.success = False
            resp.message = (f"{path} holds D={ff.config.embedding_dim} embeddings but grounder "
                            f"{self.embedder.name!r} embeds in D={d}: current field kept")
            return resp
        with self._lock:
            self.field = ff
            self._version += 1
            n = ff.num_voxels
        resp.success, resp.message, resp.num_voxels = True, f"loaded {n} voxels from {path}", n
        return resp

    @_never_raises
    def _srv_clear(self, req, resp):
        with self._lock:
            self.field.clear()
            self._version += 1
        resp.success, resp.message = True, "field cleared"
        return resp
