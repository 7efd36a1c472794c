"""``find-ros``: one console script, subcommands dispatched lazily to the module that implements them.

``find-ros demo`` (sim camera + perception node + scripted instructions), ``train`` / ``eval``
(FIND model), ``field`` (3D feature field tools), ``bench`` (benchmarks), ``run`` (the perception node over a
recorded rosbag2, outputs recorded into a new one), ``reference-eval`` (clicks -> stored references, measured). A subcommand whose module
is not part of this install says so and returns 2.
"""
from __future__ import annotations

import importlib
import sys

__all__ = ["main", "SUBCOMMANDS"]

SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("find_ros.ros.demo", "cli", "sim camera -> perception node with scripted instructions; writes a report"),
    "train": ("find_ros.model.train", "cli", "train the FIND interface on simulated or recorded data"),
    "eval": ("find_ros.tools.model_eval", "cli", "evaluate a FIND model (grounding / retrieval metrics)"),
    "field": ("find_ros.tools.field_cli", "cli", "3D feature field tools (fuse a dataset, query, export)"),
    "bench": ("find_ros.tools.bench", "cli", "speed benchmarks"),
    "run": ("find_ros.ros.offline", "cli", "perception node over a recorded rosbag2; outputs to a new rosbag2 + summary"),
    "reference-eval": ("find_ros.tools.reference_eval", "main",
                       "click-to-reference evaluation over DDS: sim clicks -> stored references -> 'the <name>'"),
}


def _usage() -> str:
    lines = ["usage: find-ros <command> [args...]", "", "commands:"]
    lines += [f"  {name:<14} {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
    lines.append("\n'find-ros <command> --help' shows a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a subcommand; returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"find-ros: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        # Only "this subcommand's module is absent" is 'not available'; a broken import inside it propagates.
        if e.name is None or not (module_name == e.name or module_name.startswith(e.name + ".")):
            raise
        print(f"find-ros {name}: not available yet in this install (module {module_name} is missing)",
              file=sys.stderr)
        return 2
    func = getattr(module, func_name, None)
    if func is None:
        print(f"find-ros {name}: not available yet ({module_name} has no {func_name}())", file=sys.stderr)
        return 2
    code = func(rest)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
