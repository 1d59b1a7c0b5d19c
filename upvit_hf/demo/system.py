"""CPU settings that decide whether the demo takes minutes or tens of minutes on a small machine."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

from transformers.utils import logging

logger = logging.get_logger("upvit_hf.demo")

MAX_THREADS = 4
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_KEEP_BELOW = 1 << 30


def default_threads() -> int:
    """The cores nobody else is using (by the 1-minute load average), 1 to 4.

    On an idle 2-core machine 2 threads train the language model ~1.7× faster than 1; on a busy one two
    OpenMP threads that keep waiting for each other measured ~25× slower per step than a single thread.
    Beyond 4 the demo's tiny matrices gain nothing.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:  # not available on this platform
        busy = 0.0
    return max(1, min(MAX_THREADS, cores, round(cores - busy)))


def keep_freed_memory() -> bool:
    """Let glibc reuse freed blocks of up to 1 GiB instead of returning each one to the kernel.

    A 10k-word vocabulary makes every language-model step allocate and free ~40 MB logits tensors, above
    glibc's largest mmap threshold (32 MB): each is then mapped afresh and faulted in page by page, which
    measured ~60% of a distillation step in kernel time (3× slower steps). Process-wide and harmless (the
    memory stays reusable by this process); a no-op returning False where glibc is not the allocator.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BELOW) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BELOW) == 1
    except (OSError, AttributeError):
        return False
    if not done:
        logger.info("mallopt is not available; training steps may spend much of their time in page faults")
    return done
