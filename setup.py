"""pip install of the find_ros python package (the interfaces are built by CMake: see scripts/setup.sh).

In a ROS 2 workspace, colcon builds this package with CMakeLists.txt (build_type ament_cmake) instead.
"""
from setuptools import find_packages, setup

setup(
    name="find_ros",
    version="0.1.0",
    description="FIND interleaved grounding, 3D target poses and a 3D feature field for ROS 2 RGB-D robots",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=("find_ros", "find_ros.*")),
    package_data={"find_ros": ["models/*/*", "models/*/*/*"]},
    install_requires=[
        "numpy>=1.26",
        "torch",
        "transformers>=4.45",
        "safetensors",
        "opencv-python-headless",
        "open3d",
    ],
    entry_points={
        "console_scripts": [
            "find-ros = find_ros.tools.cli:main",
            "perception_node = find_ros.ros.perception_node:run",
            "sim_camera_node = find_ros.ros.sim_camera_node:run",
            "replay_node = find_ros.ros.replay_node:run",
        ],
    },
)
