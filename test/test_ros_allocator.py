"""find_ros.ros.allocator: freed frame-sized buffers stay in the process (no fresh pages for the next frame).

Each case runs in its own interpreter: malloc settings are process-wide and the test process keeps its own."""
from __future__ import annotations

import subprocess
import sys

_PROBE = """
import resource, sys
import numpy as np
from find_ros.ros.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = []
for _ in range(3):  # a 20 MB frame buffer, filled and freed, three times
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(20 << 20, np.uint8)
    del a
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(*faults)
"""


def _faults(mode: str) -> list[int]:
    r = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return [int(v) for v in r.stdout.split()]


def test_a_freed_buffer_is_reused_without_new_page_faults():
    """glibc's defaults hand the buffer back to the kernel after its first use (the second one faults its pages in
    again); with keep_freed_memory() the second and third uses fault nothing."""
    default, kept = _faults("default"), _faults("keep")
    assert default[1] > 100, default  # the default really returns the memory (else this test proves nothing)
    assert kept[1] == 0 and kept[2] == 0, kept


_RESERVE_PROBE = """
import resource, sys, threading
import numpy as np
from find_ros.ros import allocator
assert allocator.reserve_heap(8) == 0  # without the raised thresholds freed blocks would go back: nothing reserved
if sys.argv[1] != "unset":
    assert allocator.keep_freed_memory()
out = []

def frames():  # a worker thread: (reserve), then the first frames' growing set of buffers, kept alive as a node does
    reserved = allocator.reserve_heap(int(sys.argv[2]))
    f0 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    kept = [np.ones(n << 20, np.uint8) for n in (1, 3, 2, 4, 1, 3, 2, 4)]  # 20 MB, filled
    out.append((reserved, resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - f0))

t = threading.Thread(target=frames)
t.start()
t.join()
print(*out[0])
"""


def _reserve(mode: str, mb: int) -> tuple[int, int]:
    r = subprocess.run([sys.executable, "-c", _RESERVE_PROBE, mode, str(mb)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    reserved, faults = (int(v) for v in r.stdout.split())
    return reserved, faults


def test_reserve_heap_lets_a_thread_grow_without_new_page_faults():
    """The node's worker reserves its frames' high-water mark at activation: 20 MB of new buffers in that thread
    then fault (almost) nothing, against ~4,000 pages without the reserve (the proof that the probe can fail)."""
    none = _reserve("keep", 0)
    assert none[0] == 0 and none[1] > 1000, none
    reserved, faults = _reserve("keep", 32)
    assert reserved == 32 << 20 and faults < 200, (reserved, faults)
    assert _reserve("unset", 32)[0] == 0  # thresholds not raised in the process: no reserve (it would not stay)


def test_reserve_heap_refuses_a_negative_size():
    import pytest

    from find_ros.ros.allocator import reserve_heap

    with pytest.raises(ValueError, match="mb >= 0"):
        reserve_heap(-1)
