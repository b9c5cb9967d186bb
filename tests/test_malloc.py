"""tweetbot.malloc: a training process keeps the memory it frees, so the next step reuses it."""

import os
import platform
import subprocess
import sys

import pytest

from tweetbot import malloc

PROBE = """
import os, sys
import numpy as np
from tweetbot import malloc
kept = malloc.keep_freed_memory() if sys.argv[1] == "keep" else False
resident = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20
block = np.ones(200 * 2**20 // 8)  # 200 MiB, every page written
before = resident()
del block
print(kept, before - resident())
"""


def freed_mib(mode: str, environment: dict | None = None) -> tuple[str, int]:
    """What the probe process gave back of a freed 200 MiB block, in MiB (and whether it kept its memory)."""
    env = {**os.environ, **(environment or {})}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env)
    kept, returned_mib = out.stdout.split()
    return kept, int(returned_mib)


glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


@glibc_only
def test_freed_memory_stays_with_the_process_only_when_kept():
    assert freed_mib("default")[1] > 150  # glibc gave the pages back
    kept, returned = freed_mib("keep")
    assert kept == "True" and returned < 10  # held for the next step


@glibc_only
def test_the_environment_form_keeps_memory_in_another_process():
    assert freed_mib("default", {"GLIBC_TUNABLES": malloc.TUNABLES})[1] < 10


STEP_PROBE = """
import os, resource, sys
import jax, jax.numpy as jnp
from tweetbot import malloc
if sys.argv[1] == "keep":
    malloc.keep_freed_memory()
faulted = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt * os.sysconf("SC_PAGE_SIZE") // 2**20
w, x = jnp.full((512, 8192), 1 / 512), jnp.ones((4096, 512))
step = jax.jit(lambda x: jnp.tanh(x @ w) @ w.T)  # its temporary: one block of 128 MiB, over a thread arena's cap
# Compiled, and its memory allocated: kept, the heap can still grow by a block in the first few steps, and
# now and then later, until its free space has a hole the block fits in (on a 2-core Xeon 7 in 16 processes
# faulted a block in steps 4-8, so 5 steps measured after 3 averaged 32 MiB; one after step 5 is diluted here).
for _ in range(5):
    x = step(x).block_until_ready()
before = faulted()
for _ in range(20):
    x = step(x).block_until_ready()
print((faulted() - before) // 20)
"""


def faulted_mib_per_step(mode: str) -> int:
    """MiB of new pages a steady jitted step with a 128 MiB temporary faults in, in a process of its own."""
    out = subprocess.run([sys.executable, "-c", STEP_PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@glibc_only
def test_a_jitted_step_reuses_its_large_temporaries_only_when_kept():
    assert faulted_mib_per_step("default") > 100  # the 128 MiB block, mmapped afresh at every step
    assert faulted_mib_per_step("keep") < 16
