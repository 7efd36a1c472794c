"""Clean exit of the find_ros executables on SIGINT / SIGTERM, and stopping child processes.

A terminal Ctrl-C on ``ros2 launch`` sends SIGINT to the whole process group and launch then forwards a second
SIGINT (later SIGTERM) to each child. rclpy's own handler turns the first into a context shutdown and Python's
default turns the second into a ``KeyboardInterrupt`` raised wherever the teardown happens to be, so a node
died with a traceback and exit code -2. :class:`StopSignals` replaces both: every SIGINT / SIGTERM only sets
:attr:`StopSignals.requested` (and wakes the executor), the spin loop returns, and the teardown runs to the
end uninterrupted; the process exits 0. If the teardown itself hangs, a watchdog started at the first signal
prints every thread's stack and exits 1 after ``grace_s``, so a supervisor never waits forever.

Use with ``rclpy.init(..., signal_handler_options=SignalHandlerOptions.NO)`` (rclpy then installs nothing)::

    stop = StopSignals.install()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    ...
    spin_until_stopped(executor, stop)
    ... teardown ...
    release_context()
    stop.teardown_done()

and the executable's entry point is ``run = entry_point(main)`` (``exit_process(main())``).

No rclpy import at module level: :func:`stop_process` is used by tools that never start ROS themselves.
"""
from __future__ import annotations

import faulthandler
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterable

__all__ = ["StopSignals", "make_executor", "spin_until_stopped", "release_context", "exit_process", "entry_point",
           "stop_process", "stop_processes"]


class StopSignals:
    """SIGINT / SIGTERM -> a stop request (any number of times); a watchdog bounds the teardown that follows."""

    def __init__(self, *, grace_s: float = 10.0) -> None:
        self.requested = threading.Event()
        self.count = 0
        self.grace_s = float(grace_s)
        self._done = threading.Event()
        self._wakers: list[Callable[[], None]] = []
        self._watchdog: threading.Thread | None = None
        self._signals: tuple[int, ...] = ()

    _installed: "StopSignals | None" = None

    @classmethod
    def install(cls, *, grace_s: float = 10.0,
                signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)) -> "StopSignals":
        """Install the handlers (main thread only) and return the object they report to. The process has one:
        a second call returns the first one (an executable script installs it before its heavy imports, so a
        signal during them is kept, and ``main()`` finds it)."""
        if cls._installed is not None:
            return cls._installed
        self = cls._installed = cls(grace_s=grace_s)
        self._signals = tuple(signals)
        for sig in self._signals:
            signal.signal(sig, self._handle)
        return self

    def add_waker(self, wake: Callable[[], None]) -> None:
        """``wake()`` is called on each signal (e.g. an executor's ``wake``) so a blocked wait returns at once."""
        self._wakers.append(wake)

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        self.requested.set()
        for wake in list(self._wakers):
            try:
                wake()
            except Exception:  # noqa: BLE001 - a waker of a destroyed executor; the flag is what matters
                pass
        if self._watchdog is None and self.grace_s > 0:
            self._watchdog = threading.Thread(target=self._watch, name="find_ros-stop-watchdog", daemon=True)
            self._watchdog.start()

    def _watch(self) -> None:
        if self._done.wait(self.grace_s):
            return
        print(f"find_ros: teardown still running {self.grace_s:.0f} s after the stop signal; thread stacks:",
              file=sys.stderr, flush=True)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        os._exit(1)

    def teardown_done(self) -> None:
        """The teardown finished: the watchdog stands down and later signals are ignored. (Python's finalisation
        resets every handler it installed to SIG_DFL, so a signal forwarded while the interpreter exits would
        otherwise kill the process with -SIGINT after a clean teardown; an ignored signal is left ignored.)"""
        self._done.set()
        for sig in self._signals:
            signal.signal(sig, signal.SIG_IGN)


def spin_until_stopped(executor: Any, stop: StopSignals, *, until: Callable[[], bool] | None = None,
                       period_s: float = 0.1) -> None:
    """Spin ``executor`` until a stop signal, ``until()`` is true or its context shuts down."""
    stop.add_waker(executor.wake)
    context = executor.context
    while not stop.requested.is_set() and context.ok() and not (until is not None and until()):
        executor.spin_once(timeout_sec=period_s)


def release_context(context: Any = None) -> None:
    """Shut down and destroy an rclpy context (default: the global one) so its DDS participant is deleted now:
    peers see it leave at once instead of after its lease expires."""
    import rclpy

    context = context if context is not None else rclpy.get_default_context()
    # rclpy's LifecycleNode sits in reference cycles that keep its rcl node, and with it the context's DDS
    # participant, alive after destroy_node() until the garbage collector runs; a process that then ends with
    # os._exit never deletes the participant, and its 64 MiB shared-memory segment stays in /dev/shm. Collect
    # first (the caller has dropped its references to destroyed nodes), objects a node froze out of the collector's
    # reach (PerceptionNode(freeze_gc=True)) included.
    gc.unfreeze()
    gc.collect()
    context.try_shutdown()
    context.destroy()


def exit_process(code: int) -> None:
    """End an executable whose teardown is complete (nodes destroyed, context released, threads joined): flush the
    output and exit with ``code`` without the interpreter's finalisation, which on a 2-core machine spends 1-2 s
    collecting torch / transformers / open3d objects that are about to vanish with the process anyway. Only for an
    executable's entry point (``__main__`` / scripts), never for a function called in a running program."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def entry_point(main: Callable[[], int]) -> Callable[[], None]:
    """The console-script entry point of an executable whose ``main()`` returns its exit code after a complete
    teardown: ``run = entry_point(main)`` in the node's module (``setup.py``: ``module:run``), and
    ``if __name__ == "__main__": run()``. ``run()`` removes the shared-memory segments dead Fast DDS participants
    left behind (:func:`find_ros.ros.dds.remove_zombie_segments`), calls ``main()``, then :func:`exit_process`
    with its code."""

    def run() -> None:
        from find_ros.ros.dds import remove_zombie_segments

        removed = remove_zombie_segments()
        if removed:
            print(f"find_ros: removed {len(removed)} shared-memory segment(s) of dead Fast DDS participants from "
                  f"/dev/shm ({', '.join(removed[:3])}{', ...' if len(removed) > 3 else ''})", file=sys.stderr)
        exit_process(main())

    run.__doc__ = f"Console-script entry point: ``{main.__module__}.main()``, then exit_process (find_ros.ros.shutdown)."
    run.__module__ = main.__module__
    run.__qualname__ = "run"
    return run


def make_executor(kind: str, *, context: Any = None, log: Any = None) -> Any:
    """The executor an executable spins: ``"events"``, rclpy's EventsExecutor (its wait and dispatch are C++, so
    the executor thread takes the GIL from a model thread for far less time per message), or ``"single"``, a
    SingleThreadedExecutor, which is also what ``"events"`` falls back to where rclpy has no EventsExecutor (before
    kilted; ``log`` says so); on ``context`` (default: rclpy's global one)."""
    if kind not in ("events", "single"):
        raise ValueError(f"executor must be 'events' or 'single', got {kind!r}")
    from rclpy.executors import SingleThreadedExecutor

    if kind == "events":
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError:
            if log is not None:
                log.info("executor: this rclpy has no EventsExecutor; using SingleThreadedExecutor")
        else:
            return EventsExecutor(context=context)
    return SingleThreadedExecutor(context=context)


def run_lifecycle_node(make_node: Callable[[], Any], argv: list[str] | None = None) -> int:
    """``main()`` of a lifecycle node executable: rclpy without its signal handlers, the node from ``make_node()``,
    spun by :func:`make_executor` of its ``executor`` parameter (``"single"`` when it has none), with
    ``autostart:=true`` configure + activate (exit 1 when either fails), spin until SIGINT / SIGTERM (once or
    repeatedly, in any lifecycle state), then destroy the node (it frees what it holds and joins its threads) and
    release the context; returns the exit code (0 after a stop signal, 1 when ``make_node()`` raises a ValueError,
    e.g. an invalid start-time parameter, which is logged)."""
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.signals import SignalHandlerOptions

    stop = StopSignals.install()
    rclpy.init(args=sys.argv if argv is None else [sys.argv[0], *argv], signal_handler_options=SignalHandlerOptions.NO)
    node = executor = None
    try:
        try:
            node = make_node()
        except ValueError as e:  # an invalid start-time parameter (ParameterError): one line, exit 1
            rclpy.logging.get_logger("find_ros").error(f"cannot start: {e}")
            return 1
        executor = make_executor(node.get_parameter("executor").value if node.has_parameter("executor") else "single",
                                 log=node.get_logger())
        executor.add_node(node)
        autostart = bool(node.get_parameter("autostart").value)
        if autostart and not stop.requested.is_set():
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: configure failed (see above); exiting")
                return 1
            if not stop.requested.is_set() and node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: activate failed (see above); exiting")
                return 1
        if not autostart:
            node.get_logger().info("unconfigured (autostart:=false): waiting for lifecycle transitions "
                                   f"(configure, activate) on {node.get_name()}/change_state")
        spin_until_stopped(executor, stop)
        if stop.requested.is_set():
            node.get_logger().info("stop signal: shutting down")
        return 0
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        node = executor = None  # a LifecycleNode: release_context collects it, so its DDS participant goes too
        release_context()
        stop.teardown_done()


def stop_process(proc: subprocess.Popen, *, timeout_s: float = 10.0) -> int:
    """SIGINT (a ROS node's clean shutdown), then SIGKILL after ``timeout_s``; waits either way; returns the code."""
    return stop_processes([proc], timeout_s=timeout_s)[0]


def stop_processes(procs: Iterable[subprocess.Popen], *, timeout_s: float = 10.0,
                   before_kill: int | None = None) -> list[int]:
    """Stop several processes at once (SIGINT to all, then wait, then SIGKILL the ones left); their return codes.
    ``before_kill``: a signal sent to a process that is still running at the deadline, one second before its
    SIGKILL (SIGUSR1 with ``faulthandler.register`` in the child: its stacks land in its log)."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass
    end = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(timeout=max(end - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            if before_kill is not None:
                try:
                    p.send_signal(before_kill)
                    p.wait(timeout=1.0)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    return [p.returncode for p in procs]
