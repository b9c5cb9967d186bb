"""Keep what a training process frees for its next step: glibc's malloc, told not to give memory back.

    malloc.keep_freed_memory()   # once, before training (train.run does it)

XLA allocates every step's buffers (the activations, the LSTM kernel's workspace, the gradients) afresh and frees
them when the step ends. By default glibc hands blocks that large back to the kernel when they are freed, so
every step faults in and zeroes tens of megabytes of new pages. Measured side by side on a 2-core Xeon with AMX
(benchmarks/results/train.md): h128x2 float32 88K chars/s against 113K kept, bfloat16 149K against 240K, the
pure-JAX scan 55K against 65K; at h512x3, where the matmuls dominate, even. Kept, the process holds its peak
allocation until it ends, and a training process reaches that peak at every step anyway.

What this leaves: XLA's threads allocate from arenas of their own, whose heaps hold at most 64 MiB, so a larger
block there is still mmapped every step (h512x3's temporaries, one block of 241 MiB: 9% of its step went to the
kernel faulting pages in, perf on a 2-core EPYC). One arena for the whole process (M_ARENA_MAX 1, with fast bins
off) keeps those too, and h512x3 gains from it, but the default size loses, and the default size is what most
training runs: in `make bench` on that EPYC, h128x2 float32 0.97-1.08x PyTorch in four runs (median 1.03)
against 1.05-1.16x in five runs without it (1.11), bfloat16 1.31-1.65x (1.52) against 1.32-1.95x (1.56),
h512x3 float32 1.07-1.17x (1.14) against 0.96-1.08x (0.98). So it is not set.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
# Blocks up to this size come from malloc's heap, not from mmap: XLA's temporaries of one step are a single
# block, tens of megabytes at h128x2 and hundreds at h512x3.
FROM_HEAP_UP_TO = 2**30
NEVER_TRIM = 2**31 - 1  # bytes free at the top of the heap before malloc returns them
# The same settings for another process, through its environment (the benchmark gives them to PyTorch).
TUNABLES = f"glibc.malloc.trim_threshold={NEVER_TRIM}:glibc.malloc.mmap_threshold={FROM_HEAP_UP_TO}"


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse; False where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) and libc.mallopt(M_MMAP_THRESHOLD, FROM_HEAP_UP_TO))
