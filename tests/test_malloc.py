"""tweetbot.malloc: a training process keeps the memory it frees, so the next step reuses it."""

import os
import platform
import subprocess
import sys

import pytest

from tweetbot import malloc

# Allocates, writes and frees a 200 MiB block on the main thread or, as XLA does, on a thread of its own.
PROBE = """
import os, sys, threading
import numpy as np
from tweetbot import malloc
kept = malloc.keep_freed_memory() if sys.argv[1] == "keep" else False
resident = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20
returned = []

def allocate_and_free():
    block = np.ones(200 * 2**20 // 8)  # every page written
    before = resident()
    del block
    returned.append(before - resident())

if sys.argv[2] == "thread":
    worker = threading.Thread(target=allocate_and_free)
    worker.start()
    worker.join()
else:
    allocate_and_free()
print(kept, returned[0])
"""


def freed_mib(mode: str, environment: dict | None = None, on: str = "main") -> tuple[str, int]:
    """What the probe process gave back of a freed 200 MiB block, in MiB (and whether it kept its memory)."""
    env = {**os.environ, **(environment or {})}
    command = [sys.executable, "-c", PROBE, mode, on]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    kept, returned_mib = out.stdout.split()
    return kept, int(returned_mib)


glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


@glibc_only
def test_freed_memory_stays_with_the_process_only_when_kept():
    assert freed_mib("default")[1] > 150  # glibc gave the pages back
    kept, returned = freed_mib("keep")
    assert kept == "True" and returned < 10  # held for the next step


@glibc_only
def test_a_block_freed_on_another_thread_stays_too():
    assert freed_mib("default", on="thread")[1] > 150
    kept, returned = freed_mib("keep", on="thread")
    assert kept == "True" and returned < 10


@glibc_only
def test_the_environment_form_keeps_memory_in_another_process():
    assert freed_mib("default", {"GLIBC_TUNABLES": malloc.TUNABLES})[1] < 10
    assert freed_mib("default", {"GLIBC_TUNABLES": malloc.TUNABLES}, on="thread")[1] < 10
