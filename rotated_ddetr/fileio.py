"""Safe files: atomic writing (every writer of rotated_ddetr goes through here), lock files, writable-folder checks.

A file is written to a temporary sibling and renamed over the target, so a crash never leaves a half-written file;
`remove_stale_temporaries` clears what a killed writer left. A `FileLock` (an OS lock on a file holding the owner's
pid and host) keeps two runs out of one output folder and lets concurrent inference workers share scenes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Opens a temporary file beside `path` and renames it over `path` when the block exits without error.

    Args:
        path: the final file; its parent folder is created when missing.
        mode: "w" (text, with `kwargs` such as `newline` passed to `open`) or "wb".
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes the file private (0600); give it open()'s usual mode
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _umask() -> int:
    """The process's umask (read from /proc where possible: setting it to read it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` atomically (UTF-8, '\\n' line endings)."""
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def remove_stale_temporaries(folder: str | os.PathLike, pattern: str = ".*.tmp") -> list[Path]:
    """Removes the temporaries (`atomic_open`'s `.{name}.*.tmp`) a killed writer left in `folder`; call it only while
    holding the folder's lock, so that no live writer's file goes. Returns the removed paths."""
    removed = []
    for path in sorted(Path(folder).glob(pattern)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def check_writable_folder(folder: str | os.PathLike) -> Path:
    """Creates `folder` when missing and checks that a file can be created in it, before any work is done.

    Raises:
        OSError: the folder cannot be created or written (the message names it and why).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OSError(f"{folder}: not a writable folder ({error.strerror or error})") from None
    return folder


class LockedError(RuntimeError):
    """A lock held by another live process; the message names the lock file and its holder (pid, host, start)."""


class FileLock:
    """An exclusive lock on `path` (flock on an open file holding {"pid", "host", "since"} as JSON), released on
    `release`, on exit from a `with` block, or by the OS when the process dies: a lock left by a killed process is
    stale and taken over without asking. The file is removed on release.

    Locks are advisory and need a file system with working `flock` (local disks; NFS v4 emulates it with byte-range
    locks).

    Args:
        path: the lock file (its folder must exist).
        blocking: wait for a live holder to release it, instead of raising LockedError.
    """

    def __init__(self, path: str | os.PathLike, blocking: bool = False) -> None:
        self.path = Path(path)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise LockedError(f"{self.path} is held by {holder}") from None
            try:  # the holder we waited for may have removed the file: lock the file now at `path`
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.previous = _read_holder(fd) if os.fstat(fd).st_size else None  # a killed holder's record, or None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Removes the file and releases the lock (idempotent)."""
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_lock(path: str | os.PathLike) -> FileLock | None:
    """`FileLock(path)`, or None when another live process holds it."""
    try:
        return FileLock(path)
    except LockedError:
        return None


def _read_holder(fd: int) -> str:
    """'pid P on host H since T' from a lock file's record (or what could be read of it)."""
    raw = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    try:
        record = json.loads(raw)
        return f"pid {record['pid']} on host {record['host']} since {record['since']}"
    except (ValueError, KeyError, TypeError):
        return "another process (unreadable lock record)"
