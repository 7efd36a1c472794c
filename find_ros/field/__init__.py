"""3D feature field: TSDF geometry with per-voxel colour and embedding averages (no ROS imports)."""
from find_ros.field.config import FieldConfig, FieldInputError, FieldSaveError
from find_ros.field.embedder import EmbedderError, FieldEmbedder
from find_ros.field.grid import FeatureField, IntegrateStats
from find_ros.field.query import Goal, QueryResult, connected_components_26

__all__ = ["EmbedderError", "FieldEmbedder", "FeatureField", "FieldConfig", "FieldInputError", "FieldSaveError",
           "Goal", "IntegrateStats", "QueryResult", "connected_components_26"]
