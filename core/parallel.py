"""Work on threads, in order: decoding, hashing and checking pictures.

Pillow, hashlib and torch leave Python's lock while they decode, hash and resize, so threads share the cores. Unlike
loader processes, threads may be started from the dashboard's server too (core.loaders.usable_workers).
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T, R = TypeVar("T"), TypeVar("R")


def default_threads() -> int:
    return min(4, os.cpu_count() or 1)


def in_order(work: Callable[[T], R], items: Iterable[T], threads: int | None = None, ahead: int = 64) -> Iterator[R]:
    """`work(item)` of each item, in the items' order, done on `threads` threads (default_threads()) at most `ahead`
    items before they are taken: memory stays bounded however many items there are. An exception of `work` is
    raised when its item is taken; what is pending is dropped when the caller stops early."""
    pool = ThreadPoolExecutor(threads or default_threads(), thread_name_prefix="studio-work")
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(work, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
