"""Work in progress that becomes real by one rename, and the leftovers of writers that died.

A writer makes a hidden folder or file beside its target and holds an exclusive lock on it while it
works. The operating system drops the lock when the process ends, however it ends (kill -9 included), so
a hidden leftover whose lock can be taken belongs to nobody: the next user of the folder recovers or
removes it. Without fcntl (Windows) a leftover counts as abandoned once it is a day old.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

ABANDONED_AFTER_S = 24 * 3600  # without fcntl only


class Lock:
    """An exclusive lock on a file or folder, held until close()."""

    def __init__(self, path: Path, blocking: bool = True):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        if fcntl is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError:
            os.close(self._fd)
            raise

    def still_names_it(self) -> bool:
        """Whether the locked object is still the one at `path` (not removed or replaced meanwhile)."""
        try:
            return os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
        except OSError:
            return False

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def sync_folder(folder: Path) -> None:
    """Make a rename or a new entry in `folder` durable (fsync of the folder itself; not possible on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _locked(make: Callable[[], str]) -> tuple[Path, Lock]:
    # A cleaner may take a leftover's lock between its creation and ours: then we make another one.
    while True:
        path = Path(make())
        try:
            lock = Lock(path)
        except FileNotFoundError:
            continue
        if lock.still_names_it():
            return path, lock
        lock.close()


@contextlib.contextmanager
def staging_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A hidden locked folder `parent/.PREFIX.xxxx`, removed on the way out unless the caller renamed it."""
    path, lock = _locked(lambda: tempfile.mkdtemp(prefix=f".{prefix}.", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        lock.close()


@contextlib.contextmanager
def staging_file(target: Path) -> Iterator[Path]:
    """A hidden locked file beside `target` (`.NAME.xxxx.partial`), removed on the way out unless renamed."""
    def make() -> str:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        os.close(fd)
        return name

    path, lock = _locked(make)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        lock.close()


RANDOM_PART = r"[a-z0-9_]{8}"  # what tempfile adds to a prefix


def staging_pattern(prefix: str = r"[^/]+?") -> re.Pattern:
    """Names made by staging_folder(parent, PREFIX) and staging_file: `.PREFIX.xxxxxxxx` and
    `.PREFIX.xxxxxxxx.partial`. PREFIX is a regular expression (by default: anything)."""
    return re.compile(rf"\.(?P<prefix>{prefix})\.{RANDOM_PART}(\.partial)?")


def abandoned(parent: Path, pattern: re.Pattern) -> Iterator[tuple[Path, Lock]]:
    """Entries of `parent` whose whole name matches `pattern` and whose writer is gone, each with its lock
    held while the caller recovers or removes it. Entries of live writers are passed over."""
    try:
        entries = sorted(Path(parent).iterdir())
    except OSError:
        return
    for entry in entries:
        if not pattern.fullmatch(entry.name) or entry.is_symlink():
            continue
        try:
            lock = Lock(entry, blocking=False)
        except OSError:
            continue  # a live writer holds it, or it went away
        try:
            if fcntl is None and time.time() - entry.stat().st_mtime < ABANDONED_AFTER_S:
                continue
            if lock.still_names_it():
                yield entry, lock
        finally:
            lock.close()


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()
