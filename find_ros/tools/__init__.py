"""Evaluations, benchmarks and command-line tools: above every layer (model, sim, field, grounding, ros).

They import whichever layers they measure; no layer imports them (test/test_package.py reads the import graph).

- :mod:`find_ros.tools.cli`: the ``find-ros`` console script (subcommand table, dispatched lazily);
- :mod:`find_ros.tools.bench`: ``find-ros bench``, every stage next to a reference measured in the same run;
- :mod:`find_ros.tools.model_eval`: ``find-ros eval``, grounding / retrieval metrics of a FIND model;
- :mod:`find_ros.tools.model_speed`: FIND forward-pass timing (``python -m find_ros.tools.model_speed``);
- :mod:`find_ros.tools.grounding_eval`: the video grounding pipeline against simulator ground truth;
- :mod:`find_ros.tools.field_eval`: 3D feature field text queries against simulator ground truth;
- :mod:`find_ros.tools.field_cli`: ``find-ros field`` (fuse a dataset, query, export);
- :mod:`find_ros.tools.field_bench`: field integration speed and memory (``python -m find_ros.tools.field_bench``);
- :mod:`find_ros.tools.sim_bench`: render timing (``python -m find_ros.tools.sim_bench``);
- :mod:`find_ros.tools.reference_eval`: ``find-ros reference-eval``, clicks -> stored references -> "the <name>",
  measured over DDS against simulator ground truth (:mod:`~find_ros.tools.reference_rig`: the ROS rig it drives).

Submodules are imported on demand.
"""
