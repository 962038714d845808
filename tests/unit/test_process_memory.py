"""The serving process's heap thresholds: request-sized blocks freed by one request stay for the next one."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# What a coding agent's request allocates and frees: its body, the parsed history, the body sent upstream (blocks of
# about 100 KiB, several of them in flight), round after round. The child prints the page faults the rounds took.
ROUNDS = """
import resource, sys
from gateway.process_memory import tune_heap
if sys.argv[1] == "tuned":
    assert tune_heap()
def rounds(n):
    for _ in range(n):
        blocks = [bytearray(100 * 1024) for _ in range(12)]
        del blocks
rounds(5)  # the heap grows to what one round needs
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(200)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, timeout=60, check=True)
    return int(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the C library is not glibc: its heap is left as it is")
def test_blocks_a_request_frees_are_kept_for_the_next_request_instead_of_faulted_in_again() -> None:
    # With glibc's defaults each round gives its 1.2 MiB back to the kernel and faults it in again: about 300 page
    # faults a round, 60,000 in all.
    assert _faults("tuned") < 200
