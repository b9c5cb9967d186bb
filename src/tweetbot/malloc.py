"""Keep what a training process frees for its next step: glibc's malloc, told not to give memory back.

    malloc.keep_freed_memory()   # once, before training (train.run does it)

XLA allocates every step's buffers (the activations, the LSTM kernel's workspace, the gradients) afresh and frees
them when the step ends. By default glibc hands blocks that large back to the kernel when they are freed, so
every step faults in and zeroes tens of megabytes of new pages. Measured side by side on a 2-core Xeon with AMX
(benchmarks/results/train.md): h128x2 float32 88K chars/s against 113K kept, bfloat16 149K against 240K, the
pure-JAX scan 55K against 65K; at h512x3, where the matmuls dominate, even. Kept, the process holds its peak
allocation until it ends, and a training process reaches that peak at every step anyway.

XLA's threads allocate too, and each thread's first malloc gives it an arena of its own, whose heaps hold at most
64 MiB: a larger block there is always mmapped and unmapped, whatever the threshold says. h512x3's temporaries
are one block of 241 MiB, allocated on an XLA thread: 9% of the step went to the kernel faulting its pages in
(perf, 2-core EPYC). One arena for the whole process (the main one, which grows as far as it needs) keeps those
too; set before the first training step, it holds for XLA's threads, which take their arena at their first
malloc. Shared, that arena must not keep "fast bins" of small freed blocks: every large request first merges them
all back, which at h128x2, where the main thread frees many while XLA's threads allocate, cost 5% of the step.
Python's small objects have their own allocator, so nothing else needs those bins. Interleaved processes on the
2-core EPYC: h128x2 float32 +3.5%, bfloat16 -2.5% (within the noise), h512x3 float32 +6%.
"""

from __future__ import annotations

import ctypes
import platform

M_MXFAST, M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = 1, -1, -3, -8  # glibc's malloc.h
# Blocks up to this size come from malloc's heap, not from mmap: XLA's temporaries of one step are a single
# block, tens of megabytes at h128x2 and hundreds at h512x3.
FROM_HEAP_UP_TO = 2**30
NEVER_TRIM = 2**31 - 1  # bytes free at the top of the heap before malloc returns them
# The same settings for another process, through its environment (the benchmark gives them to PyTorch).
TUNABLES = (
    f"glibc.malloc.trim_threshold={NEVER_TRIM}:glibc.malloc.mmap_threshold={FROM_HEAP_UP_TO}"
    ":glibc.malloc.arena_max=1:glibc.malloc.mxfast=0"
)


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse; False where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    settings = ((M_TRIM_THRESHOLD, NEVER_TRIM), (M_MMAP_THRESHOLD, FROM_HEAP_UP_TO), (M_ARENA_MAX, 1), (M_MXFAST, 0))
    return all([libc.mallopt(option, value) for option, value in settings])
