"""LatestWorker: newest item wins, put never blocks on the work, errors do not stop the thread, restartable."""
import threading

from find_ros.ros.latest_worker import LatestWorker


def test_items_are_handled_in_the_thread_and_wait_idle_sees_the_end():
    seen, threads = [], set()

    def handle(x):
        seen.append(x)
        threads.add(threading.current_thread().name)

    w = LatestWorker(handle, name="t-worker")
    w.start()
    for i in range(3):
        w.put(i)
        assert w.wait_idle(5.0)
    w.stop()
    assert seen == [0, 1, 2] and threads == {"t-worker"} and not w.running


def test_newest_wins_while_the_thread_is_busy_and_put_reports_the_replacement():
    gate, started, seen = threading.Event(), threading.Event(), []

    def handle(x):
        started.set()
        gate.wait(5.0)
        seen.append(x)

    w = LatestWorker(handle, name="t-busy")
    w.start()
    assert w.put("first") is False
    assert started.wait(5.0)  # "first" is being handled
    assert w.put("a") is False and w.put("b") is True and w.put("c") is True  # a and b replaced before taken
    assert not w.wait_idle(0.05)
    gate.set()
    assert w.wait_idle(5.0)
    w.stop()
    assert seen == ["first", "c"]


def test_an_escaping_error_is_logged_and_the_thread_keeps_going(caplog):
    seen = []

    def handle(x):
        if x == "bad":
            raise RuntimeError("boom")
        seen.append(x)

    w = LatestWorker(handle, name="t-err")
    w.start()
    w.put("bad")
    assert w.wait_idle(5.0)
    w.put("good")
    assert w.wait_idle(5.0)
    w.stop()
    assert seen == ["good"] and "t-err: item dropped" in caplog.text


def test_stop_drops_the_waiting_item_is_idempotent_and_start_again_works():
    seen = []
    w = LatestWorker(seen.append, name="t-restart")
    w.stop()  # never started: fine
    w.put("pending")  # no thread yet: it waits
    w.stop()  # dropped
    w.start()
    assert w.wait_idle(5.0) and seen == []
    w.put("x")
    assert w.wait_idle(5.0) and seen == ["x"]
    w.stop()
    w.stop()
    w.start()
    w.put("y")
    assert w.wait_idle(5.0) and seen == ["x", "y"]
    w.stop()


def test_stop_from_the_worker_thread_itself_does_not_deadlock():
    done = threading.Event()
    holder = {}

    def handle(x):
        holder["w"].stop()
        done.set()

    w = holder["w"] = LatestWorker(handle, name="t-self")
    w.start()
    w.put(1)
    assert done.wait(5.0) and not w.running


def test_on_start_runs_in_the_thread_before_the_first_item_and_a_failing_one_costs_nothing():
    order, gate = [], threading.Event()

    def warm():
        gate.wait(5.0)
        order.append(("warm", threading.current_thread().name))

    w = LatestWorker(lambda x: order.append((x, threading.current_thread().name)), name="t-warm", on_start=warm)
    try:
        w.start()
        w.put("a")  # waits in the slot while the warm-up runs
        assert not w.wait_idle(0.2)  # busy warming up
        gate.set()
        assert w.wait_idle(5.0)
        assert order == [("warm", "t-warm"), ("a", "t-warm")]
    finally:
        w.stop()

    def broken():
        raise RuntimeError("no warm-up today")

    got = []
    w = LatestWorker(got.append, name="t-broken", on_start=broken)
    try:
        w.start()
        w.put(1)
        assert w.wait_idle(5.0) and got == [1]
    finally:
        w.stop()
