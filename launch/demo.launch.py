"""Simulated RGB-D camera + perception node + RViz.

    ros2 launch find_ros demo.launch.py
    ros2 launch find_ros demo.launch.py rviz:=false rate_hz:=15.0 seed:=3
    ros2 topic pub --once /find/instruction_text std_msgs/msg/String "{data: 'the red cube'}"
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, IncludeLaunchDescription, SetEnvironmentVariable,
                            UnsetEnvironmentVariable)
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("find_ros")
    args = [
        DeclareLaunchArgument("rviz", default_value="true", description="start RViz with config/find_ros.rviz"),
        DeclareLaunchArgument("rate_hz", default_value="30.0", description="sim camera frame rate"),
        DeclareLaunchArgument("seed", default_value="3", description="sim scene seed"),
        DeclareLaunchArgument("trajectory", default_value="orbit", description="sim camera path: orbit or walk"),
        DeclareLaunchArgument("grounder", default_value="find",
                              description="find (FIND model) or hsv-baseline (colour-word baseline)"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "perception.yaml"),
                              description="perception node parameter file"),
        DeclareLaunchArgument("dds_profile", default_value=os.path.join(share, "config", "fastdds_shm.xml"),
                              description="Fast DDS XML profile of every process started here"),
    ]
    camera = Node(
        package="find_ros",
        executable="sim_camera_node",
        name="sim_camera_node",
        output="screen",
        parameters=[{
            "rate_hz": LaunchConfiguration("rate_hz"),
            "seed": LaunchConfiguration("seed"),
            "trajectory": LaunchConfiguration("trajectory"),
            "publish_gt": True,
            "prerender": True,  # render the 300-frame loop once (about 800 MB at 640x480): no CPU taken from the node
        }],
    )
    perception = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "perception.launch.py")),
        launch_arguments={"grounder": LaunchConfiguration("grounder"),
                          "params_file": LaunchConfiguration("params_file"),
                          "dds_profile": LaunchConfiguration("dds_profile")}.items(),
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", os.path.join(share, "config", "find_ros.rviz")],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([
        *args,
        # large images between processes: shared memory with a 64 MiB segment + UDP, no TCP (find_ros.ros.dds)
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("dds_profile")),
        UnsetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS"),
        camera,
        perception,
        rviz,
    ])
