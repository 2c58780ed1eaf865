"""Giving memory back to the operating system after an upload is decoded.

A PNG cannot be decoded at a reduced scale, so a 9000x9000 upload is held whole (about 240 MB) for a moment before it
is reduced. Pillow allocates it in 16 MB blocks; glibc serves blocks that size from the arena of the thread that asked
once it has seen one freed, and keeps them when they are freed again. Gradio runs each request in one of many worker
threads, each with its own arena, so every new thread kept another decoded image: the server grew by hundreds of MB
over a few sessions without levelling off. `malloc_trim` returns the free pages of every arena.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc_malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    return getattr(ctypes.CDLL(name), "malloc_trim", None)  # glibc only; other allocators return memory themselves


def release_freed_memory() -> bool:
    """Hand the free pages of every malloc arena back to the OS (glibc's `malloc_trim(0)`). Whether it could."""
    trim = _libc_malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
