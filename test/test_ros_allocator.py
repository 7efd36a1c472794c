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
