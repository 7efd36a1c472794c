"""The perception node's grounder and video pipeline, built from its parameters at activation.

:func:`build_grounder` gives the grounder of the ``grounder`` parameter (``find``: the FIND model of ``model_path``,
default the shipped checkpoint, on ``device`` with ``torch_threads``; ``hsv-baseline``: the colour baseline) and
what it loaded (``find/status`` ``model``); :func:`build_pipeline` wraps it in a
:class:`~find_ros.grounding.pipeline.VideoGrounder` configured from the same parameters. Errors are
:class:`RuntimeError` naming the parameter and the directory / file at fault. No node, no rclpy.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from find_ros.ros.params import pipeline_kwargs

__all__ = ["default_model_dir", "build_grounder", "build_pipeline"]


def default_model_dir() -> Path:
    """The FIND model shipped with the package (``find_ros.model.grounder.DEFAULT_MODEL_DIR``; ``find_ros/models/find``
    when the model layer is not installed)."""
    try:
        from find_ros.model import grounder as g

        d = getattr(g, "DEFAULT_MODEL_DIR", None)
        if d:
            return Path(d)
    except ImportError:
        pass
    import find_ros

    return Path(find_ros.__file__).resolve().parent / "models" / "find"


def build_grounder(params: dict[str, Any]) -> tuple[Any, str]:
    """(grounder, what it loaded: the resolved FIND model directory or ``"hsv-baseline"``) of the node parameters
    ``grounder``, ``model_path``, ``device`` and ``torch_threads``."""
    name = params["grounder"]
    if name == "hsv-baseline":
        from find_ros.grounding.baseline import HsvBaselineGrounder

        return HsvBaselineGrounder(), HsvBaselineGrounder.name
    try:
        from find_ros.model.grounder import FindGrounder
    except ImportError as e:
        raise RuntimeError(f"grounder='find' is not available in this install ({e}); "
                           "use grounder:=hsv-baseline") from e
    path = Path(params["model_path"]) if params["model_path"] else default_model_dir()
    if not path.is_dir():
        raise RuntimeError(f"grounder='find': model directory {str(path)!r} does not exist "
                           "(set model_path to a directory written by save_pretrained)")
    if int(params["torch_threads"]) > 0:
        import torch

        torch.set_num_threads(int(params["torch_threads"]))
    try:
        return FindGrounder.from_pretrained(path, device=params["device"]), str(path.resolve())
    except Exception as e:
        culprit = {"JSONDecodeError": "config.json", "UnicodeDecodeError": "config.json",
                   "SafetensorError": "model.safetensors"}.get(type(e).__name__)
        where = f" ({culprit} is corrupt)" if culprit else ""
        raise RuntimeError(f"grounder='find': cannot load the model from {str(path)!r}{where}: "
                           f"{type(e).__name__}: {e}") from e


def build_pipeline(grounder: Any, params: dict[str, Any]) -> Any:
    """The :class:`~find_ros.grounding.pipeline.VideoGrounder` of ``grounder`` with the node's pipeline parameters."""
    from find_ros.grounding.pipeline import PipelineConfig, VideoGrounder

    fields = {f.name for f in dataclasses.fields(PipelineConfig)}
    return VideoGrounder(grounder, config=PipelineConfig(**pipeline_kwargs(params, fields)))
