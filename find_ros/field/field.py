"""The feature field's public names, kept importable from here; the code lives in one module per job:

- :mod:`find_ros.field.config`: ``FieldConfig`` and the errors;
- :mod:`find_ros.field.grid`: ``FeatureField`` (block storage, integration, eviction, read-out);
- :mod:`find_ros.field.fusion`: one depth frame fused into its blocks' voxels;
- :mod:`find_ros.field.query`: similarity, goals and ``connected_components_26``;
- :mod:`find_ros.field.raycast`: depth images ray cast from the TSDF;
- :mod:`find_ros.field.io`: field files (save / load) and point-cloud export.
"""
from find_ros.field.config import FieldConfig, FieldInputError, FieldSaveError
from find_ros.field.grid import FeatureField, IntegrateStats
from find_ros.field.query import Goal, QueryResult, connected_components_26

__all__ = ["FeatureField", "FieldConfig", "FieldInputError", "FieldSaveError", "Goal", "IntegrateStats",
           "QueryResult", "connected_components_26"]
