"""How a process computes: the CPU allocator that training and the benchmarks use."""

import os
import subprocess
import sys

import pytest

from roadmap import runtime

# Frees a 256 MB tensor with glibc's default, then with freed memory kept: how much of it the
# process still holds afterwards (resident MB), each time.
HELD_AFTER_FREE = """
import os, torch
from roadmap.runtime import cpu_allocator
page = os.sysconf("SC_PAGE_SIZE")
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * page / 2**20
for keep in (False, True):
    assert cpu_allocator(keep)
    t = torch.ones(64 * 2**20)
    before = resident()
    del t
    print(256 - (before - resident()))
"""


@pytest.mark.skipif(runtime._glibc() is None or not os.path.exists("/proc/self/statm"),
                    reason="glibc's mallopt and Linux's /proc only")
def test_kept_memory_stays_with_the_process_and_the_default_gives_it_back():
    out = subprocess.run([sys.executable, "-c", HELD_AFTER_FREE], capture_output=True,
                         text=True, check=True).stdout.split()
    held_default, held_kept = map(float, out)
    assert held_default < 32, "glibc's default hands a freed 256 MB block back"
    assert held_kept > 224, "kept: the freed block stays for the next tensor"


def test_roadmap_malloc_default_leaves_glibc_alone(monkeypatch):
    calls = []
    monkeypatch.setattr(runtime, "cpu_allocator", lambda keep: calls.append(keep) or True)
    monkeypatch.setenv("ROADMAP_MALLOC", "default")
    assert runtime.keep_freed_memory() is False and calls == []
    monkeypatch.delenv("ROADMAP_MALLOC")
    assert runtime.keep_freed_memory() is True and calls == [True]
