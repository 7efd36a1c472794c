"""The shared harness of the find_ros tests: DDS environment, private domain ids, ROS contexts, node processes.

Every ROS test goes through these fixtures, so that a test cannot leave anything behind for the next one:

- ``dds_environment`` (session, autouse): the only change to this process's environment, made with a
  ``MonkeyPatch`` and undone at the end: a private ``ROS_HOME`` (node defaults such as the reference directory
  live there, not in the user's ~/.ros) and the shipped shared-memory Fast DDS profile (``config/fastdds_shm.xml``)
  instead of ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA``, whose TCP transport can deadlock when a participant is
  destroyed during a pending read (libfastdds 3.2.2; eProsima/Fast-DDS PR #6066). Tests never assign
  ``os.environ``; child processes get their environment from :func:`find_ros.ros.dds.process_env`.
- ``domain_id``: a ROS_DOMAIN_ID claimed for the test with a lock file (:func:`find_ros.ros.dds.claim_domain_id`),
  so neither the tests of this run nor a concurrent run or demo share it.
- ``ros``: an rclpy context on that domain; nodes made or adopted through it are destroyed, executors shut
  down and the context shut down in the fixture's ``finally``, whatever the test did.
- ``procs``: child processes (node executables) on that domain; stopped (SIGINT, then SIGKILL) and their log
  files closed in ``finally``.
- :func:`ros_graph`: the same three for a module- or class-scoped fixture (one node process serving several tests;
  each test still brings that process to the state it needs, so it passes alone and in any order).
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from find_ros.ros.dds import claim_domain_id, process_env, remove_zombie_segments, transport_env
from find_ros.ros.shutdown import release_context


@pytest.fixture(scope="session", autouse=True)
def dds_environment(tmp_path_factory):
    """The DDS transport of this process's participants (see the module docstring) and a private ``ROS_HOME`` (the
    nodes' default reference directory and ROS log directory live under it, never in the user's ~/.ros); undone
    after the session."""
    remove_zombie_segments()  # what killed processes of earlier runs left in /dev/shm (64 MiB of RAM each)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROS_HOME", str(tmp_path_factory.mktemp("ros_home")))
        for key, value in transport_env().items():
            if value is None:
                mp.delenv(key, raising=False)
            else:
                mp.setenv(key, value)
        yield
    remove_zombie_segments()  # and what this run's SIGKILLed children left


@pytest.fixture
def domain_id():
    """A ROS_DOMAIN_ID nobody else on this machine uses while the test runs."""
    lease = claim_domain_id()
    try:
        yield lease.domain_id
    finally:
        lease.release()


class Processes:
    """Child processes of one test, all on the test's domain; :meth:`stop_all` stops them and closes their logs."""

    def __init__(self, domain: int, log_dir: Path) -> None:
        self.domain, self.log_dir = domain, Path(log_dir)
        self._procs: list[tuple[subprocess.Popen, Any]] = []

    def env(self, **extra: str) -> dict[str, str]:
        return process_env(domain_id=self.domain, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                           RCUTILS_LOGGING_BUFFERED_STREAM="0", **extra)

    def spawn(self, args: list[str], log_name: str, **env_extra: str) -> subprocess.Popen:
        """``python args...`` in its own session (signals sent to it reach only it), stdout+stderr to a log file."""
        log = open(self.log_dir / log_name, "w")
        try:
            proc = subprocess.Popen([sys.executable, *args], env=self.env(**env_extra), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except BaseException:
            log.close()
            raise
        self._procs.append((proc, log))
        return proc

    def node(self, module: str, ros_args: list[str], log_name: str, **env_extra: str) -> subprocess.Popen:
        """A node executable (``python -m module --ros-args ...``)."""
        return self.spawn(["-m", module, "--ros-args", *ros_args], log_name, **env_extra)

    def log_path(self, proc: subprocess.Popen) -> Path:
        for p, log in self._procs:
            if p is proc:
                return Path(log.name)
        raise KeyError(proc.pid)

    def log_text(self, proc: subprocess.Popen) -> str:
        return self.log_path(proc).read_text(errors="replace")

    def stop(self, proc: subprocess.Popen, timeout_s: float = 10.0) -> int:
        from find_ros.ros.shutdown import stop_process

        return stop_process(proc, timeout_s=timeout_s)

    def stop_all(self) -> None:
        from find_ros.ros.shutdown import stop_processes

        try:
            stop_processes([p for p, _ in self._procs])
        finally:
            for _, log in self._procs:
                log.close()
            self._procs.clear()


@pytest.fixture
def procs(domain_id, tmp_path):
    p = Processes(domain_id, tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


class RosSession:
    """An rclpy context on the test's domain with one executor; every node it makes or adopts is destroyed by
    :meth:`close` (``destroy_node`` of find_ros nodes also frees their model and joins their worker threads)."""

    def __init__(self, domain: int) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.domain = domain
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
        self.executor = SingleThreadedExecutor(context=self.context)
        self._nodes: list[Any] = []

    def node(self, name: str, **kwargs: Any):
        """A plain rclpy node on this context, spun by :attr:`executor`."""
        import rclpy

        return self.adopt(rclpy.create_node(name, context=self.context, **kwargs))

    def adopt(self, node):
        """Spin ``node`` (built with ``context=session.context``) and destroy it at the end of the test."""
        self._nodes.append(node)
        self.executor.add_node(node)
        return node

    def destroy(self, node) -> None:
        """Destroy one node now (e.g. to restart it within a test)."""
        self.executor.remove_node(node)
        self._nodes.remove(node)
        node.destroy_node()

    def spin_until(self, cond: Callable[[], Any], timeout: float, *, alive: Callable[[], None] | None = None,
                   period: float = 0.02) -> bool:
        """Spin until ``cond()`` is true or ``timeout`` s pass; ``alive()`` is called each round (it raises when a
        process the test depends on died)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            if alive is not None:
                alive()
            self.executor.spin_once(timeout_sec=period)
        return bool(cond())

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def call(self, client, request, timeout: float = 10.0):
        """A service call answered within ``timeout`` s (the service must exist); the response."""
        assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
        future = client.call_async(request)
        assert self.spin_until(future.done, timeout), f"service {client.srv_name}: no answer in {timeout} s"
        return future.result()

    def close(self) -> None:
        try:
            self.executor.shutdown()
        finally:
            errors = []
            for node in reversed(self._nodes):
                try:
                    node.destroy_node()
                except Exception as e:  # noqa: BLE001 - destroy the rest, report the first
                    errors.append(e)
            self._nodes.clear()
            release_context(self.context)  # shut down and destroyed: its participant leaves now, not at GC
            if errors:
                raise errors[0]


@pytest.fixture
def ros(domain_id):
    session = RosSession(domain_id)
    try:
        yield session
    finally:
        session.close()


@contextlib.contextmanager
def ros_graph(log_dir: Path) -> Iterator[tuple[RosSession, Processes]]:
    """A claimed domain, an rclpy session and a process group on it, all released on exit (processes first)."""
    lease = claim_domain_id()
    try:
        procs = Processes(lease.domain_id, log_dir)
        try:
            session = RosSession(lease.domain_id)
            try:
                yield session, procs
            finally:
                procs.stop_all()
                session.close()
        finally:
            procs.stop_all()
    finally:
        lease.release()
