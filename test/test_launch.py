"""Static checks of launch/*.launch.py and config/find_ros.rviz (launch/launch_ros are not installable here).

Parsed with ``ast``: imports only launch APIs (and the launch-free ``find_ros.ros.launch_args``), every executable
named exists as a console script and in scripts/, every config/launch file named exists, every launch argument is
declared with a description (the ``--show-args`` view: each ``DeclareLaunchArgument`` expression is evaluated with a
recorder in place of the launch class), every ``name:=`` a launch file mentions is declared, every node parameter
offered as a launch argument is a parameter of the node, and the RViz config is YAML showing the node's output
topics.
"""
import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
ALLOWED_IMPORTS = ("launch", "launch_ros", "ament_index_python", "os", "pathlib", "shutil")
#: find_ros modules a launch file may import: pure logic without launch, rclpy or heavy dependencies
ALLOWED_FIND_ROS = ("find_ros.ros.launch_args",)
#: node parameters issue 14 asks to be launch arguments of perception.launch.py
PARAMETER_ARGUMENTS = {"autostart", "grounder", "model_path", "device", "camera_pose_source", "world_frame",
                       "field_enable", "field_voxel_size", "score_threshold", "sensor_reliability"}
REMAP_ARGUMENTS = {"color_topic", "depth_topic", "camera_info_topic", "pose_topic", "odom_topic"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            f = n.func
            if (isinstance(f, ast.Name) and f.id == name) or (isinstance(f, ast.Attribute) and f.attr == name):
                out.append(n)
    return out


def _kw(call: ast.Call, key: str):
    return next((k.value for k in call.keywords if k.arg == key), None)


def _console_scripts() -> set[str]:
    tree = _tree(ROOT / "setup.py")
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and re.fullmatch(r"[\w-]+ = [\w.]+:\w+", n.value):
            names.add(n.value.split(" = ")[0])
    return names


def _module_env(tree: ast.Module) -> dict:
    """Names a launch file defines at module level without launch: its constant tables (``INPUT_REMAPS`` ...) and
    what it imports from ``find_ros.ros.launch_args``."""
    import importlib

    env: dict = {}
    for n in tree.body:
        if isinstance(n, ast.ImportFrom) and n.module in ALLOWED_FIND_ROS:
            mod = importlib.import_module(n.module)
            env.update({a.asname or a.name: getattr(mod, a.name) for a in n.names})
    exec(compile(ast.Module(body=[n for n in tree.body if isinstance(n, ast.Assign)], type_ignores=[]),
                 "<launch file tables>", "exec"), env)
    return env


def declared_arguments(path: Path) -> dict[str, tuple[str, str]]:
    """``{name: (default_value, description)}`` of every ``DeclareLaunchArgument`` of ``path`` (what
    ``ros2 launch --show-args`` lists): each call, or the comprehension that holds it, evaluated with a recorder in
    place of the launch class; paths under the package share directory read ``<share>/...``."""
    import os

    tree = _tree(path)
    env = {**_module_env(tree), "os": os, "share": "<share>", "default_params": "<share>/config/perception.yaml"}
    out: dict[str, tuple[str, str]] = {}

    def record(name, *, default_value=None, description="", **_):
        assert name not in out, f"{path.name}: launch argument {name} declared twice"
        out[name] = (default_value, description)

    env["DeclareLaunchArgument"] = record
    inner = set()
    for comp in [n for n in ast.walk(tree) if isinstance(n, (ast.ListComp, ast.GeneratorExp))]:
        calls = _calls(comp.elt, "DeclareLaunchArgument")
        if calls:
            inner.update(map(id, calls))
            list(eval(compile(ast.Expression(comp), path.name, "eval"), dict(env)))
    for call in _calls(tree, "DeclareLaunchArgument"):
        if id(call) not in inner:
            eval(compile(ast.Expression(call), path.name, "eval"), dict(env))
    return out


def test_expected_launch_files_exist():
    assert {p.name for p in LAUNCH_FILES} >= {"perception.launch.py", "demo.launch.py"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_imports_only_launch_apis(path):
    tree = _tree(path)
    mods = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            mods += [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            mods.append(n.module or "")
    assert mods
    bad = [m for m in mods if m.split(".")[0] not in ALLOWED_IMPORTS and m not in ALLOWED_FIND_ROS]
    assert not bad, f"{path.name} imports {bad}"
    fn = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description"]
    assert fn and not fn[0].args.args, "generate_launch_description() must exist and take no arguments"
    assert _calls(tree, "LaunchDescription")


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_executables_exist(path):
    scripts = _console_scripts()
    nodes = _calls(_tree(path), "Node")
    assert nodes
    for call in nodes:
        pkg, exe = _kw(call, "package"), _kw(call, "executable")
        assert isinstance(pkg, ast.Constant) and isinstance(exe, ast.Constant), ast.dump(call)
        if pkg.value != "find_ros":
            assert (pkg.value, exe.value) == ("rviz2", "rviz2")
            continue
        assert exe.value in scripts, f"{exe.value} is not a console script in setup.py ({scripts})"
        assert (ROOT / "scripts" / exe.value).is_file(), f"scripts/{exe.value} missing (installed to lib/find_ros)"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_named_files_exist_and_the_shm_profile_is_set(path):
    tree = _tree(path)
    consts = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    named = [c for c in consts if re.search(r"\.(yaml|rviz|xml|launch\.py)$", c)]
    for c in named:
        sub = "launch" if c.endswith(".launch.py") else "config"
        assert (ROOT / sub / Path(c).name).is_file(), f"{path.name} names {c}, not in {sub}/"
    # the shipped shared-memory profile for every process, and no LARGE_DATA (its TCP transport can deadlock)
    envs = {c.args[0].value: c.args[1] for c in _calls(tree, "SetEnvironmentVariable")}
    assert set(envs) == {"FASTDDS_DEFAULT_PROFILES_FILE"}, set(envs)
    assert ast.unparse(envs["FASTDDS_DEFAULT_PROFILES_FILE"]) == "LaunchConfiguration('dds_profile')"
    assert "fastdds_shm.xml" in consts
    assert [c.args[0].value for c in _calls(tree, "UnsetEnvironmentVariable")] == ["FASTDDS_BUILTIN_TRANSPORTS"]
    # share paths are built from the installed package share directory, not the source tree
    share = _calls(tree, "get_package_share_directory")
    assert share and all(c.args[0].value == "find_ros" for c in share)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_launch_argument_is_declared_with_a_description(path):
    args = declared_arguments(path)
    assert args
    for name, (default, description) in args.items():
        assert isinstance(description, str) and len(description.strip()) >= 10, (name, description)
        assert isinstance(default, str), (name, default)
    # every "name:=" the file mentions (docstring, descriptions, comments) is one of its launch arguments, or one
    # of the included perception.launch.py (launch arguments reach an included file)
    text = path.read_text() + "\n".join(d for _, d in args.values())
    known = set(args) | (set(declared_arguments(ROOT / "launch" / "perception.launch.py"))
                         if _calls(_tree(path), "IncludeLaunchDescription") else set())
    mentioned = set(re.findall(r"\b([a-z_]+):=", text))
    assert mentioned <= known, f"{path.name} mentions undeclared launch arguments {mentioned - known}"


def test_perception_launch_arguments_remaps_and_parameters():
    from find_ros.ros import launch_args
    from find_ros.ros.params import PARAMS_BY_NAME

    path = ROOT / "launch" / "perception.launch.py"
    tree = _tree(path)
    env = _module_env(tree)
    remaps = env["INPUT_REMAPS"]
    assert {t for _, t, _ in remaps} == {"camera/color/image_raw", "camera/depth/image_raw",
                                         "camera/color/camera_info", "camera/pose", "camera/odom"}
    assert {n for n, _, _ in remaps} == REMAP_ARGUMENTS
    args = declared_arguments(path)
    assert set(args) >= {"params_file", "namespace", "dds_profile"} | PARAMETER_ARGUMENTS | REMAP_ARGUMENTS, set(args)
    # node parameters as launch arguments: parameters of the node, empty default (= not given: the params file
    # wins), and the description the node's ParamSpec gives
    param_args = set(args) & set(PARAMS_BY_NAME)
    assert param_args == set(launch_args.PARAMETER_ARGUMENTS) >= PARAMETER_ARGUMENTS
    for name in param_args:
        default, description = args[name]
        assert default == "", (name, default)
        assert description == launch_args.argument_description(name)
        assert PARAMS_BY_NAME[name].description in description
    assert args["params_file"][0] == "<share>/config/perception.yaml" and args["namespace"][0] == ""
    assert all(args[n][0] == t for n, t, _ in remaps)
    # clicks -> stored references: RViz's Publish Point and rqt_image_view's clicks on find/overlay by default
    clicks = {n: (t, src) for n, t, src, _ in env["CLICK_REMAPS"]}
    assert clicks == {"clicked_point_topic": ("find/clicked_point", "/clicked_point"),
                      "clicked_pixel_topic": ("find/clicked_pixel", "find/overlay_mouse_left")}
    assert all(args[n][0] == src for n, (_, src) in clicks.items())

    # the node is built in an OpaqueFunction once the arguments are known: the params file first, then only the
    # overrides node_parameter_overrides() computes from the given arguments (a later entry wins in launch_ros)
    (opaque,) = _calls(tree, "OpaqueFunction")
    fn_name = _kw(opaque, "function").id
    (fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == fn_name]
    (node,) = _calls(fn, "Node")
    assert _kw(node, "executable").value == "perception_node" and _kw(node, "name").value == "perception_node"
    assert _kw(node, "remappings") is not None and _kw(node, "namespace") is not None
    assert ast.unparse(_kw(node, "parameters")) == "parameters"
    (assign,) = [n for n in ast.walk(fn) if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "parameters"]
    assert ast.unparse(assign.value) == ("([params_file] if params_file else []) + "
                                         "([overrides] if overrides else [])")
    (call,) = _calls(fn, "node_parameter_overrides")
    assert [ast.unparse(a) for a in call.args] == ["given", "params_file"]
    assert ast.unparse(_kw(call, "namespace")) == "namespace"
    performed = {ast.unparse(c.func.value.args[0]) for c in _calls(fn, "perform")}
    assert performed >= {"'params_file'", "'namespace'", "name"}, performed
    assert "for name in PARAMETER_ARGUMENTS" in ast.unparse(fn)


def test_demo_launch_parameters_are_sim_camera_parameters():
    sim = pytest.importorskip("find_ros.ros.sim_camera_node")
    tree = _tree(ROOT / "launch" / "demo.launch.py")
    cam = [c for c in _calls(tree, "Node") if _kw(c, "executable").value == "sim_camera_node"]
    assert len(cam) == 1
    keys = {k.value for d in _kw(cam[0], "parameters").elts for k in d.keys}
    assert keys and keys <= set(sim.PARAMETERS), keys - set(sim.PARAMETERS)
    assert any(c.args[0].value == "rviz" for c in _calls(tree, "DeclareLaunchArgument"))
    assert _calls(tree, "IncludeLaunchDescription") and _calls(tree, "IfCondition")


def test_demo_launch_namespaces_camera_and_node_together():
    tree = _tree(ROOT / "launch" / "demo.launch.py")
    assert declared_arguments(ROOT / "launch" / "demo.launch.py")["namespace"][0] == ""
    (cam,) = [c for c in _calls(tree, "Node") if _kw(c, "executable").value == "sim_camera_node"]
    assert ast.unparse(_kw(cam, "namespace")) == "LaunchConfiguration('namespace')"
    (inc,) = _calls(tree, "IncludeLaunchDescription")
    passed = ast.unparse(_kw(inc, "launch_arguments"))
    assert "'namespace': LaunchConfiguration('namespace')" in passed
    # the demo declares no perception-node parameter itself: a default here would override the params file
    from find_ros.ros.params import PARAMS_BY_NAME

    assert not set(declared_arguments(ROOT / "launch" / "demo.launch.py")) & set(PARAMS_BY_NAME)
    assert not (set(re.findall(r"'(\w+)':", passed)) & set(PARAMS_BY_NAME)), passed


def test_demo_launch_starts_rviz_only_when_installed():
    tree = _tree(ROOT / "launch" / "demo.launch.py")
    assert declared_arguments(ROOT / "launch" / "demo.launch.py")["rviz"][0] == "true"
    (opaque,) = _calls(tree, "OpaqueFunction")
    assert ast.unparse(_kw(opaque, "condition")) == "IfCondition(LaunchConfiguration('rviz'))"
    (fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == _kw(opaque, "function").id]
    (check,) = _calls(fn, "package_executable")
    assert [a.value for a in check.args] == ["rviz2", "rviz2"]
    (log,) = _calls(fn, "LogInfo")
    assert "RViz not started" in ast.unparse(log) and "rviz:=false" in ast.unparse(log)
    (rviz,) = [c for c in _calls(tree, "Node") if _kw(c, "package").value == "rviz2"]
    assert rviz in _calls(fn, "Node"), "the rviz2 Node is built only after the check"
    # the rviz config's topics are relative, so RViz must sit in the graph's namespace to see namespace:=robot1
    assert ast.unparse(_kw(rviz, "namespace")) == "LaunchConfiguration('namespace')"


def test_package_executable_finds_an_installed_package_through_the_ament_index(tmp_path, monkeypatch):
    from find_ros.ros.launch_args import package_executable

    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # nothing on PATH
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "empty"))
    assert package_executable("rviz2", "rviz2") is None
    prefix = tmp_path / "prefix"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "rviz2").write_text("")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    assert package_executable("rviz2", "rviz2") is None  # registered, but no executable
    exe = prefix / "lib" / "rviz2" / "rviz2"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert package_executable("rviz2", "rviz2") == str(exe)
    # no ament index entry, but on PATH
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("PATH", str(exe.parent))
    assert package_executable("rviz2", "rviz2") == str(exe)


def test_rviz_config_is_yaml_with_the_node_topics():
    cfg = yaml.safe_load((ROOT / "config" / "find_ros.rviz").read_text())
    vm = cfg["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "map"
    displays = {}
    for d in vm["Displays"]:
        topic = d.get("Topic", {}).get("Value") if isinstance(d.get("Topic"), dict) else None
        displays.setdefault(d["Class"], []).append((topic, d))
    assert "rviz_default_plugins/TF" in displays

    def topics(cls):
        return {t for t, _ in displays.get(f"rviz_default_plugins/{cls}", [])}

    # relative topic names: RViz resolves them in its node's namespace, so a namespaced RViz follows the graph
    assert {"find/overlay", "find/mask", "camera/color/image_raw"} <= topics("Image")
    assert "find/markers" in topics("MarkerArray")  # in the world frame (map) once the camera pose is known
    assert {"find/field/goal", "find/target_pose_world", "camera/pose"} <= topics("Pose")
    assert all(not t.startswith("/") for items in displays.values() for t, _ in items if t is not None)
    # camera streams: best effort, like the perception node, so a best-effort camera driver shows up too
    assert all(d["Topic"]["Reliability Policy"] == "Best Effort"
               for items in displays.values() for t, d in items if t in ("camera/color/image_raw", "camera/pose"))
    (cloud,) = [d for t, d in displays["rviz_default_plugins/PointCloud2"] if t == "find/field/cloud"]
    assert cloud["Color Transformer"] == "Intensity" and cloud["Channel Name"] == "score"
    # the field writers are transient-local: a transient-local reader also gets the cloud published before RViz started
    assert all(d["Topic"]["Durability Policy"] == "Transient Local"
               for t, d in displays["rviz_default_plugins/PointCloud2"] if t in ("find/field/cloud", "find/field/heatmap"))
    for cls, items in displays.items():
        assert cls.startswith("rviz_default_plugins/"), cls
        for t, d in items:
            if t is not None:
                assert d["Topic"]["Reliability Policy"] in ("Reliable", "Best Effort")


def test_demo_launch_example_instruction_names_an_object_of_its_default_scene():
    scene_mod = pytest.importorskip("find_ros.sim")
    path = ROOT / "launch" / "demo.launch.py"
    seed = int(declared_arguments(path)["seed"][0])
    (text,) = re.findall(r"\{data: '([^']+)'\}", ast.get_docstring(_tree(path)))
    words = text.split()
    objects = {(o.colour, o.category) for o in scene_mod.Scene.generate(seed).objects}
    assert (words[-2], words[-1]) in objects, f"{text!r} is not in the seed-{seed} scene: {sorted(objects)}"
