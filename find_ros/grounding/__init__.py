"""Video grounding (no ROS): the HSV colour baseline, tracking and 3D target poses.

The ``Grounder`` / ``QueryEmbedder`` protocols and per-frame results that grounders return live in
:mod:`find_ros.grounder`, below both this package and :mod:`find_ros.model` (whose ``FindGrounder`` implements them).

- :mod:`find_ros.grounding.baseline`: ``HsvBaselineGrounder``, a colour-word BASELINE (not FIND);
- :mod:`find_ros.grounding.geometry`: mask + depth + intrinsics -> ``TargetPose`` (camera and world frames);
- :mod:`find_ros.grounding.tracking`: per-entity tracks (stable ids, smoothing, lost / re-acquired);
- :mod:`find_ros.grounding.pipeline`: ``VideoGrounder``, all of the above per RGB-D frame;
- :mod:`find_ros.grounding.click`: a click -> the FIND segmentation proposal under it -> a reference crop;
- :mod:`find_ros.grounding.reference_store`: ``ReferenceStore``, named click-made references kept on disk (it
  re-exports the names of its parts: ``reference_errors``, ``reference_names`` (the naming rule),
  ``stored_reference`` (``StoredReference``), ``reference_io`` (the atomic on-disk format) and
  ``named_references`` (``resolve_named_references``: ``"the <mug>"`` in instruction text));

Submodules are imported on demand (``from find_ros.grounding.pipeline import VideoGrounder``).
"""
