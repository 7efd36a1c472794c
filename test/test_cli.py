"""find-ros console script: lazy subcommand dispatch and the 'not available yet' path."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from find_ros.tools import cli


def test_help_lists_every_subcommand(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("demo", "train", "eval", "field", "bench"):
        assert name in out


def test_no_command_is_a_usage_error(capsys):
    assert cli.main([]) == 2
    assert "usage: find-ros" in capsys.readouterr().out


def test_unknown_command(capsys):
    assert cli.main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


def test_missing_module_is_not_available(monkeypatch, capsys):
    monkeypatch.setitem(cli.SUBCOMMANDS, "later", ("find_ros.not_written_yet", "cli", "a future tool"))
    assert cli.main(["later", "--x"]) == 2
    err = capsys.readouterr().err
    assert "find-ros later: not available yet" in err and "find_ros.not_written_yet" in err


@pytest.mark.parametrize("name", ["train", "eval", "field", "bench", "demo"])
def test_real_subcommands_dispatch_to_their_module(name, capsys):
    module_name = cli.SUBCOMMANDS[name][0]
    assert importlib.util.find_spec(module_name) is not None, module_name
    try:  # argparse --help: usage of that subcommand, exit 0 (some return 0, some raise SystemExit(0))
        code = cli.main([name, "--help"])
    except SystemExit as e:
        code = e.code
    assert code in (0, None)
    assert f"find-ros {name}" in capsys.readouterr().out


def test_dispatch_passes_argv_and_exit_code(monkeypatch, tmp_path):
    # A real module on sys.path, imported lazily by name: proves argv and the return code pass through.
    (tmp_path / "find_ros_cli_probe.py").write_text(
        "seen = []\ndef cli(argv):\n    seen.append(list(argv))\n    return 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.SUBCOMMANDS, "probe", ("find_ros_cli_probe", "cli", "probe"))
    assert cli.main(["probe", "--a", "1"]) == 7
    assert sys.modules["find_ros_cli_probe"].seen == [["--a", "1"]]


def test_console_script_runs():
    exe = Path(sys.executable).parent / "find-ros"
    if not exe.exists():
        pytest.skip("find-ros console script not installed in this environment")
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "demo" in r.stdout
    r = subprocess.run([str(exe), "demo", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--seconds" in r.stdout
