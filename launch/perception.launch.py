"""Perception node with its parameter file, namespace, grounder and input remaps as launch arguments.

    ros2 launch find_ros perception.launch.py
    ros2 launch find_ros perception.launch.py namespace:=robot1 grounder:=find \
        color_topic:=/camera/camera/color/image_raw depth_topic:=/camera/camera/aligned_depth_to_color/image_raw \
        camera_info_topic:=/camera/camera/color/camera_info

The node configures and activates itself (``autostart: true``). Large images between processes go through the
shipped Fast DDS profile ``config/fastdds_shm.xml`` (shared memory with a 64 MiB segment + UDP, no TCP), set here
for every process this launch starts (``dds_profile:=<file>`` selects another profile).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable, UnsetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# (launch argument, topic the node subscribes, description)
INPUT_REMAPS = (
    ("color_topic", "camera/color/image_raw", "colour image (rgb8/bgr8/rgba8/bgra8/mono8)"),
    ("depth_topic", "camera/depth/image_raw", "depth image registered to colour (16UC1 mm or 32FC1 m)"),
    ("camera_info_topic", "camera/color/camera_info", "colour camera intrinsics"),
    ("pose_topic", "camera/pose", "camera optical-frame pose in the world frame (PoseStamped)"),
    ("odom_topic", "camera/odom", "camera odometry (with camera_pose_source:=odom)"),
)


def generate_launch_description():
    share = get_package_share_directory("find_ros")
    default_params = os.path.join(share, "config", "perception.yaml")
    args = [
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="perception node parameter file"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("dds_profile", default_value=os.path.join(share, "config", "fastdds_shm.xml"),
                              description="Fast DDS XML profile of every process started here"),
        DeclareLaunchArgument("grounder", default_value="find",
                              description="find (FIND model) or hsv-baseline (colour-word baseline)"),
    ]
    args += [DeclareLaunchArgument(name, default_value=topic, description=desc) for name, topic, desc in INPUT_REMAPS]
    node = Node(
        package="find_ros",
        executable="perception_node",
        name="perception_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[LaunchConfiguration("params_file"),
                    {"autostart": True, "grounder": LaunchConfiguration("grounder")}],
        remappings=[(topic, LaunchConfiguration(name)) for name, topic, _ in INPUT_REMAPS],
    )
    return LaunchDescription([
        *args,
        # large images between processes: shared memory with a 64 MiB segment + UDP, no TCP (find_ros.ros.dds)
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("dds_profile")),
        UnsetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS"),
        node,
    ])
