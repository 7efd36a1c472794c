"""Fast DDS set-up of find_ros processes: which transport carries large images, as environment variables.

Three transports can be chosen for the processes a launch file, ``find-ros demo``, a benchmark or a test starts:

- ``shm`` (default): the shipped profile ``config/fastdds_shm.xml`` through ``FASTDDS_DEFAULT_PROFILES_FILE``:
  shared memory with a 64 MiB segment plus UDPv4, no TCP.
- ``large_data``: ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` (shared memory + TCP, UDP for discovery). It brings the
  TCP transport whose teardown can deadlock in libfastdds 3.2.2 (eProsima/Fast-DDS PR #6066); kept selectable.
- ``default``: Fast DDS's own defaults (UDPv4 + shared memory with a 512 KiB segment); best-effort large images are
  lost with it.

Fast DDS reads ``FASTDDS_DEFAULT_PROFILES_FILE`` once per process, when the first participant is created, so the
variables are set before a process starts (:func:`process_env`) rather than changed inside a running one.
No rclpy here: this module only computes paths and environments.
"""
from __future__ import annotations

import fcntl
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping

__all__ = ["TRANSPORTS", "DEFAULT_TRANSPORT", "PROFILE_FILE", "SAFE_DOMAIN_IDS", "DdsSetupError", "DomainLease",
           "profile_path", "transport_env", "process_env", "select_for_this_process", "claim_domain_id",
           "SHM_DIR", "segment_names", "find_zombie_segments", "remove_zombie_segments"]

TRANSPORTS = ("shm", "large_data", "default")
DEFAULT_TRANSPORT = "shm"
PROFILE_FILE = "fastdds_shm.xml"
#: Domain ids whose RTPS ports stay below Linux's ephemeral port range (ROS 2 docs: 0-101 and 215-232); 0 is left
#: to the user's own graph.
SAFE_DOMAIN_IDS = tuple(range(1, 102)) + tuple(range(215, 233))
_PROFILE_VAR = "FASTDDS_DEFAULT_PROFILES_FILE"
_BUILTIN_VAR = "FASTDDS_BUILTIN_TRANSPORTS"


class DdsSetupError(ValueError):
    """An unknown transport name, or the shipped profile file cannot be found (the message says where it looked)."""


def _candidates() -> list[Path]:
    """Where ``config/fastdds_shm.xml`` lives: next to the running sources (a checkout), else the package share
    directory of a ROS install (ament index, or ``<prefix>/share`` above ``<prefix>/lib/pythonX/site-packages``)."""
    here = Path(__file__).resolve()
    out = [here.parents[2] / "config" / PROFILE_FILE]
    try:
        from ament_index_python.packages import get_package_share_directory
        out.append(Path(get_package_share_directory("find_ros")) / "config" / PROFILE_FILE)
    except (ImportError, LookupError, OSError, ValueError):  # no ament index, or find_ros not registered in it
        pass
    if len(here.parents) > 5:
        out.append(here.parents[5] / "share" / "find_ros" / "config" / PROFILE_FILE)
    return out


def profile_path() -> Path:
    """The shipped shared-memory profile (an existing file)."""
    tried = _candidates()
    for p in tried:
        if p.is_file():
            return p
    raise DdsSetupError(f"Fast DDS profile {PROFILE_FILE} not found; looked in: {', '.join(map(str, tried))}")


def transport_env(transport: str = DEFAULT_TRANSPORT) -> dict[str, str | None]:
    """The variables that select ``transport``; ``None`` means the variable must be unset."""
    if transport == "shm":
        return {_PROFILE_VAR: str(profile_path()), _BUILTIN_VAR: None}
    if transport == "large_data":
        return {_PROFILE_VAR: None, _BUILTIN_VAR: "LARGE_DATA"}
    if transport == "default":
        return {_PROFILE_VAR: None, _BUILTIN_VAR: None}
    raise DdsSetupError(f"unknown DDS transport {transport!r}; choose one of {TRANSPORTS}")


def process_env(*, domain_id: int | None = None, transport: str = DEFAULT_TRANSPORT,
                base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """A child process's environment: ``base`` (default ``os.environ``) with ``transport`` selected,
    ``ROS_DOMAIN_ID`` set when ``domain_id`` is given, and ``extra`` variables added. ``base`` is not changed."""
    env = dict(os.environ if base is None else base)
    for key, value in transport_env(transport).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    if domain_id is not None:
        if not 0 <= int(domain_id) <= 232:
            raise DdsSetupError(f"ROS_DOMAIN_ID must be in [0, 232], got {domain_id}")
        env["ROS_DOMAIN_ID"] = str(int(domain_id))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def select_for_this_process(transport: str = DEFAULT_TRANSPORT) -> None:
    """Select ``transport`` for the calling process's own participants. Only for an executable's entry point
    (a process it owns), before its first ``rclpy.init``: Fast DDS reads these variables once per process."""
    for key, value in transport_env(transport).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


SHM_DIR = Path("/dev/shm")
#: a participant's segment (``fastdds_<16 hex>``); ports (``fastdds_port<N>``) are shared and Fast DDS reclaims them
_SEGMENT = re.compile(r"fastdds_[0-9a-f]{16}")


def segment_names(directory: Path = SHM_DIR) -> set[str]:
    """Names of the Fast DDS participant segments (``fastdds_<16 hex>``) in ``directory``, live or dead."""
    try:
        return {p.name for p in directory.iterdir() if _SEGMENT.fullmatch(p.name)}
    except OSError:
        return set()


def find_zombie_segments(directory: Path = SHM_DIR, *, min_age_s: float = 5.0, remove: bool = False) -> list[str]:
    """The shared-memory segments of Fast DDS participants whose process has died (deleted with ``remove``).

    Each participant of the shm transport maps a segment ``fastdds_<id>`` (64 MiB with ``config/fastdds_shm.xml``,
    memory on the tmpfs ``/dev/shm``) and holds an exclusive ``flock`` on ``fastdds_<id>_el`` while it lives. A
    process killed (SIGKILL, a crash, ``os._exit`` with a participant still alive) leaves both files behind and
    Fast DDS does not reclaim them: each costs its segment's RAM until the machine reboots. A lock file nobody
    holds marks a dead owner (the check ``fastdds shm clean`` makes); lock files younger than ``min_age_s`` are
    left alone, so a participant that is starting is never touched. Ports (``fastdds_port<N>``) are shared by
    all participants and reclaimed by Fast DDS itself: never touched here."""
    found: list[str] = []
    try:
        locks = sorted(directory.glob("fastdds_*_el"))
    except OSError:
        return found
    now = time.time()
    for lock in locks:
        name = lock.name[:-3]
        if not _SEGMENT.fullmatch(name):
            continue
        try:
            if now - lock.stat().st_mtime < min_age_s:
                continue
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live participant holds it
        try:
            if remove:  # under the lock: no participant can be using the segment
                for path in (directory / name, lock):
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        pass
            found.append(name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return found


def remove_zombie_segments(directory: Path = SHM_DIR, *, min_age_s: float = 5.0) -> list[str]:
    """Delete the segments :func:`find_zombie_segments` finds; returns their names."""
    return find_zombie_segments(directory, min_age_s=min_age_s, remove=True)


class DomainLease:
    """A ROS_DOMAIN_ID held by this process through an exclusive lock on a file, so that concurrent test runs,
    demos and benchmarks on one machine never share a domain. Released by :meth:`release` (or on exit)."""

    def __init__(self, domain_id: int, fd: int, path: Path) -> None:
        self.domain_id, self._fd, self.path = domain_id, fd, path

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def __enter__(self) -> "DomainLease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def claim_domain_id(*, ids: Iterable[int] = SAFE_DOMAIN_IDS, start: int | None = None,
                    lock_dir: str | Path | None = None) -> DomainLease:
    """Claim the first free domain id of ``ids``, searching from position ``start`` (default: from this
    process id, so parallel processes rarely probe the same ids first)."""
    ids = list(ids)
    if not ids:
        raise DdsSetupError("no domain ids to choose from")
    lock_dir = Path(lock_dir) if lock_dir is not None else Path(tempfile.gettempdir()) / "find_ros-domains"
    lock_dir.mkdir(parents=True, exist_ok=True)
    first = (os.getpid() * 7 if start is None else int(start)) % len(ids)
    for k in range(len(ids)):
        dom = ids[(first + k) % len(ids)]
        path = lock_dir / f"domain-{dom}.lock"
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return DomainLease(dom, fd, path)
    raise DdsSetupError(f"all {len(ids)} domain ids are claimed by other processes (lock files in {lock_dir})")
