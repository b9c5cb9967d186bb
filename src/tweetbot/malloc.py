"""Keep what a training process frees for its next step: glibc's malloc, told not to give memory back.

    malloc.keep_freed_memory()   # once, before the first JAX computation (train.run does it)

XLA allocates every step's buffers (the activations, the LSTM kernel's workspace, the gradients) afresh and frees
them when the step ends. By default glibc hands blocks that large back to the kernel when they are freed, so
every step faults in and zeroes tens of megabytes of new pages. Measured side by side on a 2-core Xeon with AMX
(benchmarks/results/train.md): h128x2 float32 88K chars/s against 113K kept, bfloat16 149K against 240K, the
pure-JAX scan 55K against 65K; at h512x3, where the matmuls dominate, even. Kept, the process holds its peak
allocation until it ends, and a training process reaches that peak at every step anyway.

XLA's threads allocate from malloc arenas of their own, and a thread's arena holds at most 64 MiB, so a larger
block allocated there is mmapped and unmapped at every step whatever the thresholds say: h128x2's temporaries
fit, but h512x3's are one block of 241 MiB, and 9% of its step went to the kernel faulting those pages in (perf,
2-core EPYC Zen 4). So JAX is also told to run each CPU computation on the thread that calls it (no async
dispatch): the main thread allocates from the main heap, which has no such cap. Training loses nothing by it, as
it waits for every step's loss anyway. Measured by alternating processes there, h512x3 float32 5.4-5.6K chars/s
async against 6.1-6.2K inline; h128x2 even (float32 101-112K against 103-112K, bfloat16 159-181K against
172K). Making the process one arena does that too (M_ARENA_MAX 1, with fast bins off), but costs the default
size: in `make bench` on that EPYC, h128x2 float32 median 1.03x PyTorch against 1.11x.

JAX reads the dispatch setting when it starts its CPU client, so call this before the process's first JAX
computation (train.run calls it first; a process that computed before keeps async dispatch, and only the
malloc settings apply).
"""

from __future__ import annotations

import ctypes
import platform

import jax

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
# Blocks up to this size come from malloc's heap, not from mmap: XLA's temporaries of one step are a single
# block, tens of megabytes at h128x2 and hundreds at h512x3.
FROM_HEAP_UP_TO = 2**30
NEVER_TRIM = 2**31 - 1  # bytes free at the top of the heap before malloc returns them
# The same settings for another process, through its environment (the benchmark gives them to PyTorch).
TUNABLES = f"glibc.malloc.trim_threshold={NEVER_TRIM}:glibc.malloc.mmap_threshold={FROM_HEAP_UP_TO}"


def keep_freed_memory() -> bool:
    """Run JAX's CPU computations on the calling thread and tell glibc's malloc to keep freed memory for reuse;
    False where the C library is not glibc."""
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) and libc.mallopt(M_MMAP_THRESHOLD, FROM_HEAP_UP_TO))
