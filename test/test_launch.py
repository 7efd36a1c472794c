"""Static checks of launch/*.launch.py and config/find_ros.rviz (launch/launch_ros are not installable here).

Parsed with ``ast``: imports only launch APIs, every executable named exists as a console script and in scripts/,
every config/launch file named exists, every parameter set on the perception node is declared by it, and the RViz
config is YAML showing the node's output topics.
"""
import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
ALLOWED_IMPORTS = ("launch", "launch_ros", "ament_index_python", "os", "pathlib")


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
    bad = [m for m in mods if m.split(".")[0] not in ALLOWED_IMPORTS]
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


def test_perception_launch_arguments_remaps_and_parameters():
    from find_ros.ros.params import PARAMS_BY_NAME

    tree = _tree(ROOT / "launch" / "perception.launch.py")
    mod = {}
    exec(compile(ast.Module(body=[n for n in tree.body if isinstance(n, ast.Assign)], type_ignores=[]),
                 "perception.launch.py", "exec"), mod)
    remaps = mod["INPUT_REMAPS"]
    assert {t for _, t, _ in remaps} == {"camera/color/image_raw", "camera/depth/image_raw",
                                         "camera/color/camera_info", "camera/pose", "camera/odom"}
    declared = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument") if isinstance(c.args[0], ast.Constant)}
    assert declared >= {"params_file", "namespace", "grounder"}
    (node,) = _calls(tree, "Node")
    assert _kw(node, "executable").value == "perception_node"
    params = _kw(node, "parameters")
    dicts = [e for e in params.elts if isinstance(e, ast.Dict)]
    keys = {k.value for d in dicts for k in d.keys}
    assert "autostart" in keys and keys <= set(PARAMS_BY_NAME), keys - set(PARAMS_BY_NAME)
    assert any(isinstance(e, ast.Call) and e.args[0].value == "params_file" for e in params.elts)
    assert _kw(node, "remappings") is not None and _kw(node, "namespace") is not None


def test_demo_launch_parameters_are_sim_camera_parameters():
    sim = pytest.importorskip("find_ros.ros.sim_camera_node")
    tree = _tree(ROOT / "launch" / "demo.launch.py")
    cam = [c for c in _calls(tree, "Node") if _kw(c, "executable").value == "sim_camera_node"]
    assert len(cam) == 1
    keys = {k.value for d in _kw(cam[0], "parameters").elts for k in d.keys}
    assert keys and keys <= set(sim.PARAMETERS), keys - set(sim.PARAMETERS)
    assert any(c.args[0].value == "rviz" for c in _calls(tree, "DeclareLaunchArgument"))
    assert _calls(tree, "IncludeLaunchDescription") and _calls(tree, "IfCondition")


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

    assert {"/find/overlay", "/find/mask", "/camera/color/image_raw"} <= topics("Image")
    assert "/find/markers" in topics("MarkerArray")
    assert {"/find/field/goal", "/find/target_pose_world"} <= topics("Pose")
    (cloud,) = [d for t, d in displays["rviz_default_plugins/PointCloud2"] if t == "/find/field/cloud"]
    assert cloud["Color Transformer"] == "Intensity" and cloud["Channel Name"] == "score"
    # the field writers are transient-local: a transient-local reader also gets the cloud published before RViz started
    assert all(d["Topic"]["Durability Policy"] == "Transient Local"
               for t, d in displays["rviz_default_plugins/PointCloud2"] if t in ("/find/field/cloud", "/find/field/heatmap"))
    for cls, items in displays.items():
        assert cls.startswith("rviz_default_plugins/"), cls
        for t, d in items:
            if t is not None:
                assert d["Topic"]["Reliability Policy"] in ("Reliable", "Best Effort")
