"""Replacing a file atomically, as fast as overwriting it in place.

``path`` always holds a whole file: the new one is written beside it and
swapped in, so an exception or a killed process leaves the previous one
intact. Three measured costs of doing that naively (1 GiB on ext4, on the
development VM) are avoided here:

- renaming over an existing file makes ext4 write the new one out at once
  (auto_da_alloc): 1.5-4x slower than ``np.save``. The two names are swapped
  instead (``renameat2(RENAME_EXCHANGE)``), which does not;
- freeing a file already on disk blocks for about 0.5 s per GiB, longer than
  writing it. The previous file is held open while its name goes and closed
  on a background thread; if the process dies, the kernel closes and frees it
  all the same, and no stray file is left;
- the new file needs fresh page-cache memory while the previous one still
  fills its own: twice the file's size, and on a VM whose idle memory goes
  back to the host, 3-5x slower to write. The previous file's cached pages are
  dropped first, when all of them are already on disk (dropping unwritten
  pages would first write out a file about to be deleted).

A save killed while writing (SIGKILL, or SIGXFSZ at the file-size limit)
leaves nothing behind: the new file is made unnamed (``O_TMPFILE``) and given
a name only once complete, just before the swap, so a process that dies
earlier takes it with it. Where the filesystem cannot make unnamed files, a
named temporary is written instead, and the next save sweeps up the ones
that dead processes left.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import secrets
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from ._errors import JaxvarsValueError

_T = TypeVar("_T")


def replace_atomically(
    path: str | os.PathLike[str], chunks: Iterable[bytes | memoryview], *, durable: bool
) -> None:
    """Write ``chunks`` to a new file and atomically put it at ``path``.

    With ``durable``, the file and the rename are flushed to disk (``fsync``)
    before returning.
    """
    given = path
    path = os.path.realpath(path)  # through a symbolic link, as open() writes: the link stays
    if os.path.isdir(path):  # refused before anything is touched: never swap a directory away
        raise JaxvarsValueError(
            f"Cannot save to {os.fspath(given)!r}: it is a directory. Give the path of a "
            "file inside it, e.g. os.path.join(directory, 'model.safetensors')."
        )
    directory, base = os.path.split(path)
    _remove_abandoned(directory, base)
    with _previous_file_released(path):
        fd = _open_unnamed(directory)
        temporary = None
        if fd is None:
            fd, temporary = _claim_name(directory, base, lambda name: os.open(name, _NEW, 0o600))
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), _mode_for(path))
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
                if temporary is None:  # named only now: the swap needs a name
                    unnamed = f.fileno()
                    _, temporary = _claim_name(directory, base, lambda n: _link(unnamed, n))
            if durable or not _exchange(temporary, path):
                os.replace(temporary, path)  # durable (already on disk), or no swap here
            else:
                os.unlink(temporary)  # now the previous file's name
        except BaseException:
            if temporary is not None and os.path.exists(temporary):
                os.unlink(temporary)
            raise
    if durable:
        _fsync_directory(directory)


_TEMPORARY = ".jaxvars-tmp"
# O_BINARY: on Windows a file opened without it rewrites newlines in the data.
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def _open_unnamed(directory: str) -> int | None:
    """A new unnamed file in ``directory`` open for writing; None where the OS or
    the filesystem cannot make one (not Linux, NFS, an old kernel)."""
    if not hasattr(os, "O_TMPFILE") or not os.path.isdir("/proc/self/fd"):
        return None  # without /proc it could not be linked in at the end
    try:
        return os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600)
    except OSError as e:
        # EISDIR: a kernel that predates O_TMPFILE reads it as O_DIRECTORY.
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise


def _link(fd: int, path: str) -> None:
    """Give the open unnamed file ``fd`` the name ``path``."""
    directory = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        # Given a directory descriptor, os.link calls linkat(AT_SYMLINK_FOLLOW),
        # which links the file that /proc's entry points to; plain link() would
        # link the /proc entry itself, and fail.
        os.link(f"/proc/self/fd/{fd}", os.path.basename(path), dst_dir_fd=directory)
    finally:
        os.close(directory)


def _claim_name(directory: str, base: str, claim: Callable[[str], _T]) -> tuple[_T, str]:
    """``claim(name)`` for a fresh temporary name beside ``base`` (``.base.*.PID.jaxvars-tmp``,
    which ``_remove_abandoned`` recognises); returns its result and the name."""
    for _ in range(100):
        name = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.{os.getpid()}{_TEMPORARY}")
        try:
            return claim(name), name
        except FileExistsError:  # another save's temporary: draw again
            continue
    raise FileExistsError(f"No free temporary file name beside {base!r} in {directory!r}.")


def _mode_for(path: str) -> int:
    """The permissions ``open(path, "wb")`` would leave: the old file's, else the umask's."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    # Reading the umask means setting it; /proc tells without that race.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_umask_lock = threading.Lock()


def _remove_abandoned(directory: str, base: str) -> None:
    """Delete temporary files that killed saves of ``base`` left (``.base.*.PID.jaxvars-tmp``)."""
    prefix = f".{base}."
    try:
        names = [n for n in os.listdir(directory) if n.startswith(prefix)]
        names = [n for n in names if n.endswith(_TEMPORARY)]
    except OSError:
        return
    for name in names:
        pid = name[: -len(_TEMPORARY)].rsplit(".", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):  # another save may have removed it already
                os.unlink(os.path.join(directory, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def _previous_file_released(path: str | os.PathLike[str]) -> Iterator[None]:
    """Around writing the new file: drop the previous one's clean cache, and free it later."""
    if sys.platform != "linux":  # elsewhere an open file may not be renamed over
        yield
        return
    try:
        previous = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # never waits (on a FIFO, say)
    except OSError:  # no previous file, or one we may not read: freed in place
        yield
        return
    try:
        cached = cache_stat(previous)
        if cached is not None and cached.dirty + cached.writeback == 0:
            with contextlib.suppress(OSError):  # only a speed-up: never fails a save
                os.posix_fadvise(previous, 0, 0, os.POSIX_FADV_DONTNEED)
        yield
    finally:
        threading.Thread(target=os.close, args=(previous,), name="jaxvars-free").start()


class CacheStat(ctypes.Structure):
    """Page counts of a file's cache: cached, dirty (not yet written), being written, ..."""

    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("cache", "dirty", "writeback", "evicted", "recently_evicted")
    ]


def cache_stat(fd: int) -> CacheStat | None:
    """The open file's page-cache counts (Linux 6.5 and newer); None if unknown."""
    libc = _libc()
    if libc is None or sys.platform != "linux":
        return None
    whole_file = (ctypes.c_uint64 * 2)(0, 0)  # offset 0, length 0: to the end
    stat = CacheStat()
    cachestat = 451  # the same number on every Linux architecture
    if libc.syscall(cachestat, fd, whole_file, ctypes.byref(stat), 0) != 0:
        return None  # an older kernel (ENOSYS)
    return stat


def _exchange(new: str, path: str | os.PathLike[str]) -> bool:
    """Atomically swap the names ``new`` and ``path``; False if unsupported."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None or not os.path.exists(path):
        return False
    at_cwd, rename_exchange = -100, 2
    # False on e.g. a filesystem without RENAME_EXCHANGE: os.replace instead
    return renameat2(at_cwd, os.fsencode(new), at_cwd, os.fsencode(path), rename_exchange) == 0


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # no C library to load: os.replace is used
        return None


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
