"""3D feature field: TSDF geometry with per-voxel colour and embedding averages (no ROS imports)."""
from find_ros.field.field import (FeatureField, FieldConfig, FieldInputError, FieldSaveError, Goal,
                                  IntegrateStats, QueryResult, connected_components_26)
from find_ros.field.embedder import EmbedderError, FieldEmbedder

__all__ = ["EmbedderError", "FieldEmbedder", "FeatureField", "FieldConfig", "FieldInputError", "FieldSaveError",
           "Goal", "IntegrateStats", "QueryResult", "connected_components_26"]
