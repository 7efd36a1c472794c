"""find_ros: FIND (Interfacing Foundation Models' Embeddings) as a ROS 2 perception package.

The generated interface modules (``find_ros.msg``, ``find_ros.srv``) are built by rosidl and may be
installed in a different ``find_ros`` directory than this source tree (a venv or a ROS install
space). ``extend_path`` merges every ``find_ros`` directory on ``sys.path`` into one package, so
``find_ros.model`` and ``find_ros.msg`` import side by side in every install layout.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
