"""The package as a user installs it: layering, interfaces, and a real colcon build."""
from __future__ import annotations

import ast
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ("find_ros.model", "find_ros.sim", "find_ros.field", "find_ros.grounding")

# Imports every module of the core packages with rclpy, ROS message packages and find_ros.ros made
# unimportable, then reports any ROS module that still got loaded.
_BLOCKED_IMPORT_SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.abc, json, pkgutil, sys

    BLOCKED = ("rclpy", "rosidl", "rcl_interfaces", "std_msgs", "sensor_msgs", "geometry_msgs",
               "nav_msgs", "visualization_msgs", "builtin_interfaces", "find_ros.msg", "find_ros.srv",
               "find_ros.ros", "cv_bridge", "message_filters", "tf2_ros", "launch")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"blocked for this test: {name}")
            return None

    sys.meta_path.insert(0, Block())
    imported = []
    for pkg_name in sys.argv[1:]:
        pkg = importlib.import_module(pkg_name)
        imported.append(pkg_name)
        for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), pkg_name + "."):
            importlib.import_module(info.name)
            imported.append(info.name)
    leaked = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
    print(json.dumps({"imported": imported, "leaked": leaked}))
    """
)


def test_core_layers_import_without_rclpy():
    out = subprocess.run(
        [sys.executable, "-c", _BLOCKED_IMPORT_SCRIPT, "find_ros.instruction", *CORE],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["leaked"] == []
    # every core package imported, with its submodules
    for pkg in CORE:
        assert pkg in report["imported"]


def test_blocker_really_blocks_rclpy():
    """The layering test above would be worthless if the blocker let rclpy through."""
    script = _BLOCKED_IMPORT_SCRIPT.replace('for pkg_name in sys.argv[1:]:', 'import rclpy\nfor pkg_name in []:')
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "blocked for this test: rclpy" in out.stderr


# ---------------------------------------------------------------------------------------------------------------
# The import graph between find_ros's sub-packages, read from the source with ast (so an import inside a function,
# a try or an if counts as much as one at the top, and nothing is executed). A node is a sub-package (find_ros/model/)
# or a top-level module (find_ros/instruction.py -> "instruction").
# ---------------------------------------------------------------------------------------------------------------

LAYERS = ("model", "sim", "field", "grounding", "ros")
#: (importer, imported) pairs that must not appear: the model and the grounding pipeline meet only in
#: find_ros/grounder.py (the Grounder protocol), the field does not load the model, and the tools sit above
#: every layer (find_ros/tools/: evaluations, benchmarks, command-line tools)
FORBIDDEN_EDGES = {("model", "grounding"), ("grounding", "model"), ("field", "model")} | {(layer, "tools")
                                                                                        for layer in LAYERS}


def _imported_names(source: str, module: str, is_package: bool) -> set[str]:
    """Every dotted name an import in ``source`` (the text of ``module``) can load, wherever the import stands.

    Relative imports are resolved; ``from a.b import c`` yields ``a.b`` and ``a.b.c`` (c may be a module);
    ``importlib.import_module("x")`` and ``__import__("x")`` with a literal name count too."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[:len(parts) - node.level + 1]) if node.level else ""
            name = ".".join(p for p in (base, node.module) if p)
            names.add(name)
            names.update(f"{name}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__"):
                names.add(node.args[0].value)
    return names


def _subpackage_import_graph(root: Path) -> dict[tuple[str, str], list[str]]:
    """(importer node, imported node) -> 'file imports name' lines, for the find_ros tree under ``root``."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted((root / "find_ros").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts  # ("find_ros", "model", "grounder")
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        if module == "find_ros":
            continue
        src = parts[1]
        for name in _imported_names(path.read_text(), module, is_package):
            target = name.split(".")
            if target[0] == "find_ros" and len(target) > 1 and target[1] != src:
                edges.setdefault((src, target[1]), []).append(f"{path.relative_to(root)} imports {name}")
    return edges


def _find_cycle(edges) -> list[str] | None:
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_layer_import_graph_has_no_forbidden_edge_and_no_cycle():
    edges = _subpackage_import_graph(ROOT)
    bad = {f"{a} -> {b}": lines for (a, b), lines in edges.items() if (a, b) in FORBIDDEN_EDGES}
    assert not bad, json.dumps(bad, indent=1)
    assert _find_cycle(edges) is None, _find_cycle(edges)
    # the graph is really read: the tools import the layers they measure, the nodes import the model
    assert {("tools", "model"), ("tools", "grounding"), ("tools", "field"), ("ros", "model")} <= set(edges)


def test_import_graph_reader_sees_lazy_relative_and_dynamic_imports(tmp_path):
    """The graph test above would be worthless if imports inside functions or relative ones slipped through."""
    pkg = tmp_path / "find_ros" / "model"
    pkg.mkdir(parents=True)
    (tmp_path / "find_ros" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from .. import tools\n")
    (pkg / "x.py").write_text(textwrap.dedent(
        """
        import importlib
        def f():
            from find_ros.grounding.pipeline import VideoGrounder
            try:
                from ..field import grid
            except ImportError:
                pass
            return importlib.import_module("find_ros.sim.scene")
        """))
    edges = _subpackage_import_graph(tmp_path)
    assert set(edges) == {("model", "tools"), ("model", "grounding"), ("model", "field"), ("model", "sim")}
    assert _find_cycle({("a", "b"), ("b", "c"), ("c", "a")}) == ["a", "b", "c", "a"]
    assert _find_cycle({("a", "b"), ("b", "c")}) is None


MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LONG_REASON = "# long:"


def _oversized(root: Path) -> list[str]:
    """Modules of ``root``/find_ros over MAX_MODULE_LINES lines and functions over MAX_FUNCTION_LINES (def to its
    last line, decorators excluded) without a ``# long: <reason>`` comment on the line above them."""
    out = []
    for path in sorted((root / "find_ros").rglob("*.py")):
        src = path.read_text()
        rel = path.relative_to(root)
        if src.count("\n") > MAX_MODULE_LINES:
            out.append(f"{rel}: {src.count(chr(10))} lines")
        lines = src.splitlines()
        for node in ast.walk(ast.parse(src)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            n = node.end_lineno - node.lineno + 1
            first = min([d.lineno for d in node.decorator_list] + [node.lineno])
            reason = lines[first - 2].strip() if first >= 2 else ""
            if n > MAX_FUNCTION_LINES and not (reason.startswith(LONG_REASON) and len(reason) > len(LONG_REASON) + 5):
                out.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    return out


def test_modules_and_functions_stay_small():
    """One job per module and per function: no module over 400 lines, no function over 60 unless the line above
    it says why (``# long: <reason>``)."""
    assert _oversized(ROOT) == []


def test_size_check_sees_long_modules_and_functions_and_honours_reasons(tmp_path):
    pkg = tmp_path / "find_ros"
    pkg.mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(61))
    (pkg / "a.py").write_text(f"def long_one():\n{body}\n\n# long: a recipe read top to bottom\n"
                              f"@staticmethod\ndef excused():\n{body}\n\ndef short():\n    return 1\n")
    (pkg / "b.py").write_text("x = 1\n" * 401)
    assert _oversized(tmp_path) == ["find_ros/a.py:1 long_one: 62 lines", "find_ros/b.py: 401 lines"]


def test_interfaces_and_sources_merge_into_one_package():
    import find_ros
    import find_ros.instruction
    from find_ros.msg import GroundedEntity, Grounding, InterleavedInstruction
    from find_ros.srv import FieldFile, QueryField, SetInstruction

    g = Grounding()
    g.entities = [GroundedEntity(phrase="the red cube", score=0.5)]
    assert g.entities[0].phrase == "the red cube"
    assert InterleavedInstruction().reference_masks == []
    assert hasattr(QueryField.Request(), "text") and hasattr(FieldFile.Response(), "num_voxels")
    assert hasattr(SetInstruction.Response(), "instruction_id")
    assert Path(find_ros.instruction.__file__).parent.name == "find_ros"
    assert len(find_ros.__path__) >= 1


def test_package_xml_declares_interfaces_package():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "find_ros"
    assert root.find("export/build_type").text == "ament_cmake"
    assert root.findtext("member_of_group") == "rosidl_interface_packages"
    deps = {e.text for e in root if e.tag.endswith("depend")}
    for needed in ("rosidl_default_generators", "rosidl_default_runtime", "rclpy", "sensor_msgs", "geometry_msgs"):
        assert needed in deps
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for p in sorted((ROOT / "msg").glob("*.msg")) + sorted((ROOT / "srv").glob("*.srv")):
        assert f'"{p.parent.name}/{p.name}"' in cmake, f"{p.name} is not generated by CMakeLists.txt"


# ---------------------------------------------------------------------------------------------------------------
# A fresh venv: `pip install -r requirements.txt`, then `colcon build` with its python, then the installed package
# runs with it. On a ROS install the venv is made with --system-site-packages and sees the ROS python packages of
# /opt/ros/<distro> (and the apt python3-* modules the ROS debs pull in); `source /opt/ros/<distro>/setup.bash` sets
# AMENT_PREFIX_PATH / CMAKE_PREFIX_PATH / LD_LIBRARY_PATH. This machine's ROS install is the ROS wheels inside the
# project venv, mixed with everything else that venv holds (torch, transformers, ...). So the test symlinks ONLY the
# ROS parts of it into an underlay directory that a .pth file of the fresh venv names, points the prefix variables at
# the project venv (its share/ and lib/ hold the ROS CMake configs, ament index and C libraries), and checks that
# every requirement is imported from the fresh venv's own site-packages and the project venv is not on sys.path.
# ---------------------------------------------------------------------------------------------------------------

#: what a ROS 2 install provides to python besides the ROS packages themselves: catkin_pkg (ament_cmake_core's
#: package_xml_2_cmake.py imports it; the ROS debs depend on python3-catkin-pkg-modules) and the TFMessage-only
#: tf2_msgs that scripts/setup.sh builds where the real one (a ROS package) is missing
_ROS_EXTRA_DISTRIBUTIONS = ("catkin-pkg", "tf2-msgs")
#: the pip requirements whose import location the test checks (module name: requirement)
_REQUIREMENT_MODULES = {"torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers",
                        "safetensors": "safetensors", "open3d": "open3d-cpu", "cv2": "opencv-python-headless",
                        "numpy": "numpy", "yaml": "pyyaml", "rosbags": "rosbags"}


def _dist_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _base_interpreter() -> Path | None:
    """The interpreter the project venv was made from (`home` in its pyvenv.cfg): a fresh venv is made from it."""
    base = Path(getattr(sys, "_base_executable", "") or "")
    if base.is_file() and not base.resolve().is_relative_to(Path(sys.prefix).resolve()):
        return base
    cfg = Path(sys.prefix) / "pyvenv.cfg"
    if cfg.is_file():
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                for name in (f"python{sys.version_info.major}.{sys.version_info.minor}", "python3"):
                    if (Path(value.strip()) / name).is_file():
                        return Path(value.strip()) / name
    return None


def _clean_env() -> dict[str, str]:
    """The environment of a shell that has no venv activated and no ROS setup sourced: os.environ (of the pytest
    process, whose python the project venv's bootstrap .pth re-executed with LD_LIBRARY_PATH) without those."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "AMENT_PREFIX_PATH",
                "CMAKE_PREFIX_PATH", "COLCON_PREFIX_PATH", "_ROS_WHEELS_BOOTSTRAP_COMPLETE",
                "COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG"):
        env.pop(key, None)
    project_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != project_bin)
    return env


def _ros_underlay(project_site: Path, dest: Path, provided: set[str]) -> set[str]:
    """Symlink into ``dest`` the top-level entries of ``project_site`` that belong to the ROS wheels (``ros-*``
    distributions, not the venv's bootstrap .pth), to :data:`_ROS_EXTRA_DISTRIBUTIONS` and to the python packages
    those require that the fresh venv does not already have (``provided``: its distribution names). Returns the
    distribution names linked."""
    from importlib import metadata

    from packaging.requirements import Requirement

    dists = {_dist_name(d.metadata["Name"]): d for d in metadata.distributions(path=[str(project_site)])}
    wanted = {n for n in dists if n.startswith("ros-") and n != "ros-wheels-bootstrapper"}
    wanted |= {n for n in _ROS_EXTRA_DISTRIBUTIONS if n in dists}
    todo = sorted(wanted)
    while todo:
        for spec in dists[todo.pop()].requires or []:
            req = Requirement(spec)
            name = _dist_name(req.name)
            if (req.marker is None or req.marker.evaluate({"extra": ""})) and name in dists \
                    and name not in wanted and name not in provided:
                wanted.add(name)
                todo.append(name)
    tops: set[str] = set()
    for name in wanted:
        dist = dists[name]
        top_level = dist.read_text("top_level.txt")
        if dist.read_text("RECORD") is None and top_level:  # an egg-info (ament_cmake_python) has no RECORD
            tops.update(t.strip() for t in top_level.splitlines() if t.strip())
            continue
        for f in dist.files or []:
            if f.parts and f.parts[0] != ".." and f.parts[0] != "__pycache__":  # ../../../share etc: the prefix
                tops.add(f.parts[0])
    dest.mkdir(parents=True)
    for top in sorted(tops):
        if (project_site / top).exists() and not top.endswith(".pth"):
            (dest / top).symlink_to(project_site / top)
    return wanted


_FRESH_VENV_SMOKE = textwrap.dedent(
    """
    import importlib, json, sys
    import numpy as np
    import rclpy
    from rclpy.serialization import deserialize_message, serialize_message
    from find_ros.msg import GroundedEntity, Grounding
    from find_ros.instruction import parse_instruction
    from find_ros.model.grounder import DEFAULT_MODEL_DIR, FindGrounder

    grounder = FindGrounder.from_pretrained(DEFAULT_MODEL_DIR)
    grounder.set_instruction(parse_instruction("the red cube"))
    rgb = np.full((96, 128, 3), 90, np.uint8)
    rgb[30:70, 40:90] = (220, 30, 30)
    frame = grounder.ground(rgb)
    msg = Grounding(entities=[GroundedEntity(phrase=e.phrase, score=e.score) for e in frame.entities])
    back = deserialize_message(serialize_message(msg), Grounding)  # the installed typesupport libraries
    rclpy.init()
    rclpy.shutdown()
    maps = open("/proc/self/maps").read().split()
    mods = sys.argv[1:] + ["rclpy", "std_msgs", "find_ros", "find_ros.msg"]
    print(json.dumps({
        # rosbags is a namespace package (no __file__): its directory then
        "files": {m: getattr(importlib.import_module(m), "__file__", None)
                  or list(importlib.import_module(m).__path__)[0] for m in mods},
        "sys_path": sys.path, "prefix": sys.prefix, "model": str(DEFAULT_MODEL_DIR),
        "entities": [(e.phrase, e.score, list(e.mask.shape), int(e.mask.sum())) for e in frame.entities],
        "pixel_embeddings": list(frame.pixel_embeddings.shape), "roundtrip": back.entities[0].phrase,
        "find_ros_libs": sorted({p for p in maps if "libfind_ros__" in p}),
    }))
    """
)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fresh_venv_installs_requirements_and_colcon_builds(tmp_path):
    """A fresh venv gets `pip install -r requirements.txt`, `colcon build` runs with its python and installs what
    `ros2 run` / `ros2 launch` need (executables, launch/, config/, the default model), and the installed package
    grounds a frame with the shipped model, every requirement coming from the fresh venv. (The package's one colcon
    build test: a second build with the project venv's python would add ~100 s and check nothing more.)"""
    colcon = Path(sys.executable).with_name("colcon")
    if not colcon.exists():
        pytest.skip("colcon is not installed in this environment (scripts/setup.sh installs it)")
    base = _base_interpreter()
    if base is None:
        pytest.skip("the interpreter the project venv was made from is not found")
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    ros_prefix = Path(sys.prefix)  # this machine's ROS install: the ROS wheels of the project venv
    project_site = ros_prefix / "lib" / pyver / "site-packages"
    clean = _clean_env()
    timings = {}

    # 1. the fresh venv and the requirements file, as the README tells a ROS user (minus --system-site-packages)
    venv = tmp_path / "venv"
    t0 = time.monotonic()
    made = subprocess.run([str(base), "-m", "venv", str(venv)], env=clean, capture_output=True, text=True,
                          timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    py = venv / "bin" / "python"
    fresh_site = venv / "lib" / pyver / "site-packages"
    assert fresh_site.is_dir() and not list(fresh_site.glob("torch*")), "the venv is not fresh"
    timings["venv"] = time.monotonic() - t0
    t0 = time.monotonic()
    pip = subprocess.run(
        # --no-compile: the same files, byte-compiled when first imported instead of all at install time (halves
        # the install here: ~45 s instead of ~95 s with a warm pip cache on 2 cores)
        [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
         "--no-compile", "-r", str(ROOT / "requirements.txt")],
        env=clean, capture_output=True, text=True, timeout=1200,
    )
    timings["pip_install"] = time.monotonic() - t0
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]

    # 2. the ROS side, as a ROS install makes it visible (see the comment above _ROS_EXTRA_DISTRIBUTIONS)
    from importlib import metadata

    provided = {_dist_name(d.metadata["Name"]) for d in metadata.distributions(path=[str(fresh_site)])}
    for req in _REQUIREMENT_MODULES.values():
        assert req in provided, f"{req} is not installed in the fresh venv"
    underlay = tmp_path / "ros_underlay" / "site-packages"
    linked = _ros_underlay(project_site, underlay, provided)
    assert "ros-rclpy" in linked and not linked & set(_REQUIREMENT_MODULES.values()), sorted(linked)
    assert not {p.name for p in underlay.iterdir()} & {"torch", "transformers", "open3d", "find_ros", "cv2"}
    (fresh_site / "ros_underlay.pth").write_text(f"{underlay}\n")
    ros_env = dict(clean)
    ros_env.update(  # what `source /opt/ros/<distro>/setup.bash` sets, for this machine's ROS install
        AMENT_PREFIX_PATH=str(ros_prefix), CMAKE_PREFIX_PATH=str(ros_prefix),
        LD_LIBRARY_PATH=os.pathsep.join([str(ros_prefix / "lib"), *sorted(map(str, project_site.glob("ros_*.libs")))]),
    )
    active = dict(ros_env, VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{ros_env['PATH']}")  # activated

    # 3. colcon build (the build tool, like /usr/bin/colcon on a ROS install) with the fresh venv's python
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "find_ros").symlink_to(ROOT)
    t0 = time.monotonic()
    build = subprocess.run(
        [str(colcon), "build", "--cmake-args", f"-DPython3_EXECUTABLE={py}", "-DBUILD_TESTING=OFF"],
        cwd=ws, env=active, capture_output=True, text=True, timeout=900,
    )
    timings["colcon_build"] = time.monotonic() - t0
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    prefix = ws / "install" / "find_ros"
    install_site = prefix / "lib" / pyver / "site-packages"
    assert (install_site / "find_ros" / "msg").is_dir(), "colcon did not install for the fresh venv's python"
    # what `ros2 run` / `ros2 launch` find in the install tree
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "find_ros").exists()
    assert (prefix / "share" / "find_ros" / "package.xml").exists()
    for exe in ("perception_node", "sim_camera_node", "replay_node", "find-ros"):
        path = prefix / "lib" / "find_ros" / exe
        assert path.exists() and os.access(path, os.X_OK), f"ros2 run find_ros {exe} would not find {path}"
    for sub in ("launch", "config"):
        installed = {p.name for p in (prefix / "share" / "find_ros" / sub).iterdir()}
        source = {p.name for p in (ROOT / sub).iterdir() if not p.name.startswith(".")}
        assert source <= installed, (sub, source - installed)
    model = install_site / "find_ros" / "models" / "find-sim-tiny"
    assert {"config.json", "model.safetensors"} <= {p.name for p in model.iterdir()}, "the default model is not installed"

    # 4. the installed package, with the fresh venv's python after `source install/setup.sh`
    t0 = time.monotonic()
    smoke = tmp_path / "smoke.py"
    smoke.write_text(_FRESH_VENV_SMOKE)
    sourced = dict(active, FIND_WS=str(ws))  # the install tree is sourced in the child shell, as a user does
    run = subprocess.run(
        ["sh", "-c", '. "$FIND_WS/install/setup.sh" && exec python ' + shlex.join([str(smoke), *_REQUIREMENT_MODULES])],
        cwd=tmp_path, env=sourced, capture_output=True, text=True, timeout=300,
    )
    timings["smoke"] = time.monotonic() - t0
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    files = report["files"]
    assert report["prefix"] == str(venv)
    for mod in _REQUIREMENT_MODULES:
        assert files[mod].startswith(str(fresh_site) + os.sep), (mod, files[mod])
    for mod in ("rclpy", "std_msgs"):
        assert files[mod].startswith(str(underlay) + os.sep), (mod, files[mod])
    for mod in ("find_ros", "find_ros.msg"):
        assert files[mod].startswith(str(install_site) + os.sep), (mod, files[mod])
    assert report["model"].startswith(str(install_site) + os.sep)
    assert not [p for p in report["sys_path"] if p.startswith(str(ros_prefix) + os.sep) or p == str(ROOT)], \
        report["sys_path"]
    assert report["find_ros_libs"] and all(p.startswith(str(prefix) + os.sep) for p in report["find_ros_libs"]), \
        report["find_ros_libs"]
    ((phrase, score, shape, _),) = report["entities"]
    assert phrase == "the red cube" and shape == [96, 128] and math.isfinite(score), report["entities"]
    assert report["roundtrip"] == "the red cube" and len(report["pixel_embeddings"]) == 3

    # 5. `ros2 run find_ros find-ros` runs the installed entry point with the fresh venv's python
    exe = prefix / "lib" / "find_ros" / "find-ros"
    cli = subprocess.run(["sh", "-c", '. "$FIND_WS/install/setup.sh" && exec ' + shlex.join([str(exe), "--help"])],
                         cwd=tmp_path, env=sourced, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and "usage" in cli.stdout.lower(), cli.stdout[-2000:] + cli.stderr[-2000:]
    print("fresh venv timings (s):", {k: round(v, 1) for k, v in timings.items()},
          "- ROS underlay besides the ros-* wheels:", sorted(n for n in linked if not n.startswith("ros-")))
    shutil.rmtree(ws / "build", ignore_errors=True)
