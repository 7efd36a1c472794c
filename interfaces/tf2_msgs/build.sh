#!/usr/bin/env bash
# Build and install this tf2_msgs fallback (msg/TFMessage only) into a venv, only when `import tf2_msgs.msg` fails
# there (a ROS install, or an earlier run, already provides it: nothing to do). Plain cmake from the ROS wheels, as
# scripts/setup.sh builds find_ros's own interfaces (its step 3 has repointed the wheels' CMake exports).
# Usage: bash interfaces/tf2_msgs/build.sh [VENV]   (default: <repo>/.venv). Safe to re-run.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VENV=$(cd "${1:-$ROOT/.venv}" && pwd)
PY="$VENV/bin/python"

log() { printf '[setup] %s\n' "$*"; }

if "$PY" -c 'import tf2_msgs.msg' >/dev/null 2>&1; then
  log "tf2_msgs importable ($("$PY" -c 'import tf2_msgs; print(tf2_msgs.__path__[0])' 2>/dev/null)): fallback not needed"
  exit 0
fi
log "tf2_msgs missing: building the TFMessage-only fallback (interfaces/tf2_msgs) into $VENV"
BUILD="$ROOT/build/tf2_msgs"
mkdir -p "$BUILD"
export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH"
run() {  # run "$@" with its output in $BUILD/<step>.log, shown only when it fails
  local step=$1; shift
  "$@" >"$BUILD/$step.log" 2>&1 || { tail -50 "$BUILD/$step.log"; log "tf2_msgs fallback: $step failed (log: $BUILD/$step.log)"; exit 1; }
}
run configure cmake -S "$HERE" -B "$BUILD/cmake" -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF
run build cmake --build "$BUILD/cmake" -j2
run install cmake --install "$BUILD/cmake"
# the message must also load its C type support (a publisher needs it), not only import
"$PY" -c '
from tf2_msgs.msg import TFMessage
from geometry_msgs.msg import TransformStamped
TFMessage.__class__.__import_type_support__()
m = TFMessage(transforms=[TransformStamped(child_frame_id="c")])
print("[setup] ok: tf2_msgs fallback", TFMessage.__module__, len(m.transforms))'
