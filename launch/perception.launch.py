"""Perception node with its parameter file, node parameters, namespace and input remaps as launch arguments.

    ros2 launch find_ros perception.launch.py
    ros2 launch find_ros perception.launch.py namespace:=robot1 grounder:=find sensor_reliability:=best_effort \
        color_topic:=/camera/camera/color/image_raw depth_topic:=/camera/camera/aligned_depth_to_color/image_raw \
        camera_info_topic:=/camera/camera/color/camera_info
    ros2 launch find_ros perception.launch.py params_file:=my.yaml autostart:=false   # under a lifecycle manager
    ros2 launch find_ros perception.launch.py --show-args

Clicks teach stored references: RViz's Publish Point (/clicked_point) and rqt_image_view clicks on find/overlay
(find/overlay_mouse_left) are remapped to the node's find/clicked_point and find/clicked_pixel
(clicked_point_topic:=, clicked_pixel_topic:=).

Node parameters as launch arguments (autostart, grounder, model_path, device, camera_pose_source, world_frame,
field_enable, field_voxel_size, score_threshold, sensor_reliability; ``find_ros.ros.launch_args``) default to the
empty string, "not given": then the params file's value applies (``config/perception.yaml`` unless
``params_file:=``), else the node's default. A launch argument given a value wins over the params file. The launch
file's only default of its own is ``autostart: true`` for a params file that does not set ``autostart``, so the node
configures and activates itself; ``autostart:=false`` (or ``autostart: false`` in the params file) leaves it
unconfigured for a lifecycle manager.

Large images between processes go through the shipped Fast DDS profile ``config/fastdds_shm.xml`` (shared memory
with a 64 MiB segment + UDP, no TCP), set here for every process this launch starts (``dds_profile:=<file>``
selects another profile).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable, UnsetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from find_ros.ros.launch_args import PARAMETER_ARGUMENTS, argument_description, node_parameter_overrides

# (launch argument, topic the node subscribes, description)
INPUT_REMAPS = (
    ("color_topic", "camera/color/image_raw", "colour image (rgb8/bgr8/rgba8/bgra8/mono8)"),
    ("depth_topic", "camera/depth/image_raw", "depth image registered to colour (16UC1 mm or 32FC1 m)"),
    ("camera_info_topic", "camera/color/camera_info", "colour camera intrinsics"),
    ("pose_topic", "camera/pose", "camera optical-frame pose in the world frame (PoseStamped)"),
    ("odom_topic", "camera/odom", "camera odometry (with camera_pose_source:=odom)"),
)

# (launch argument, topic the node subscribes, default source, description): clicks that teach stored references
CLICK_REMAPS = (
    ("clicked_point_topic", "find/clicked_point", "/clicked_point",
     "3D clicks (geometry_msgs/PointStamped in the world frame; RViz's Publish Point tool) -> stored references"),
    ("clicked_pixel_topic", "find/clicked_pixel", "find/overlay_mouse_left",
     "pixel clicks on the colour image (PointStamped x=u, y=v; rqt_image_view on find/overlay) -> stored references"),
)


def _perception_node(context):
    """The node, with the launch arguments given non-empty as parameters after the params file."""
    params_file = LaunchConfiguration("params_file").perform(context)
    namespace = LaunchConfiguration("namespace").perform(context)
    given = {name: LaunchConfiguration(name).perform(context) for name in PARAMETER_ARGUMENTS}
    overrides = node_parameter_overrides(given, params_file, namespace=namespace)
    parameters = ([params_file] if params_file else []) + ([overrides] if overrides else [])
    return [Node(
        package="find_ros",
        executable="perception_node",
        name="perception_node",
        namespace=namespace,
        output="screen",
        emulate_tty=True,
        parameters=parameters,
        remappings=[(topic, LaunchConfiguration(name)) for name, topic, _ in INPUT_REMAPS]
        + [(topic, LaunchConfiguration(name)) for name, topic, _, _ in CLICK_REMAPS],
    )]


def generate_launch_description():
    share = get_package_share_directory("find_ros")
    default_params = os.path.join(share, "config", "perception.yaml")
    args = [
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="perception node parameter file (empty: none); a node-parameter launch "
                                          "argument given a value overrides its key"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("dds_profile", default_value=os.path.join(share, "config", "fastdds_shm.xml"),
                              description="Fast DDS XML profile of every process started here"),
    ]
    # node parameters: empty = not given (the params file's value applies)
    args += [DeclareLaunchArgument(name, default_value="", description=argument_description(name))
             for name in PARAMETER_ARGUMENTS]
    args += [DeclareLaunchArgument(name, default_value=topic, description=desc) for name, topic, desc in INPUT_REMAPS]
    args += [DeclareLaunchArgument(name, default_value=source, description=desc)
             for name, _, source, desc in CLICK_REMAPS]
    return LaunchDescription([
        *args,
        # large images between processes: shared memory with a 64 MiB segment + UDP, no TCP (find_ros.ros.dds)
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("dds_profile")),
        UnsetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS"),
        OpaqueFunction(function=_perception_node),
    ])
