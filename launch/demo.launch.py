"""Simulated RGB-D camera + perception node (perception.launch.py) + RViz when it is installed.

    ros2 launch find_ros demo.launch.py
    ros2 launch find_ros demo.launch.py rviz:=false rate_hz:=15.0 seed:=3
    ros2 launch find_ros demo.launch.py namespace:=robot1 grounder:=hsv-baseline
    ros2 topic pub --once /find/instruction_text std_msgs/msg/String "{data: 'the red chair'}"

The default scene (seed 3) holds a small red chair, a small pink chair, a large cyan torus and a large orange cube;
with ``namespace:=robot1`` publish the instruction on ``/robot1/find/instruction_text``.

``namespace:=`` puts the sim camera and the perception node in the same namespace (their topics move together).
RViz starts only when ``rviz2`` is installed (the log says when it is not; the camera and the node run either way);
``rviz:=false`` never starts it. Every launch argument of perception.launch.py (grounder, params_file, autostart,
score_threshold, ...) reaches the perception node when given here.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, IncludeLaunchDescription, LogInfo, OpaqueFunction,
                            SetEnvironmentVariable, UnsetEnvironmentVariable)
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from find_ros.ros.launch_args import package_executable


def _rviz(context):
    """RViz with config/find_ros.rviz when rviz2 is installed; otherwise a log line and nothing to start."""
    if package_executable("rviz2", "rviz2") is None:
        return [LogInfo(msg="RViz not started: package 'rviz2' is not installed (the sim camera and the perception "
                            "node run without it; install ros-$ROS_DISTRO-rviz2, or pass rviz:=false)")]
    share = get_package_share_directory("find_ros")
    return [Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        namespace=LaunchConfiguration("namespace"),  # config/find_ros.rviz's topics are relative: they follow it
        arguments=["-d", os.path.join(share, "config", "find_ros.rviz")],
    )]


def generate_launch_description():
    share = get_package_share_directory("find_ros")
    args = [
        DeclareLaunchArgument("rviz", default_value="true",
                              description="start RViz with config/find_ros.rviz when rviz2 is installed "
                                          "(true/false; false: never)"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the sim camera and the perception node and their topics"),
        DeclareLaunchArgument("rate_hz", default_value="30.0", description="sim camera frame rate"),
        DeclareLaunchArgument("seed", default_value="3", description="sim scene seed"),
        DeclareLaunchArgument("trajectory", default_value="orbit", description="sim camera path: orbit or walk"),
        DeclareLaunchArgument("dds_profile", default_value=os.path.join(share, "config", "fastdds_shm.xml"),
                              description="Fast DDS XML profile of every process started here"),
    ]
    camera = Node(
        package="find_ros",
        executable="sim_camera_node",
        name="sim_camera_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[{
            "rate_hz": LaunchConfiguration("rate_hz"),
            "seed": LaunchConfiguration("seed"),
            "trajectory": LaunchConfiguration("trajectory"),
            "publish_gt": True,
            "prerender": True,  # render the 300-frame loop once (about 800 MB at 640x480): no CPU taken from the node
        }],
    )
    # perception.launch.py declares its own arguments (params_file, grounder, autostart, ...): given here, they
    # reach it; not given, its params file applies
    perception = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "perception.launch.py")),
        launch_arguments={"namespace": LaunchConfiguration("namespace"),
                          "dds_profile": LaunchConfiguration("dds_profile")}.items(),
    )
    return LaunchDescription([
        *args,
        # large images between processes: shared memory with a 64 MiB segment + UDP, no TCP (find_ros.ros.dds)
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("dds_profile")),
        UnsetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS"),
        camera,
        perception,
        OpaqueFunction(function=_rviz, condition=IfCondition(LaunchConfiguration("rviz"))),
    ])
