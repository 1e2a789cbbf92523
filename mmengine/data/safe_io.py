"""Reading files named by untrusted inputs: regular files only, never past a byte limit.

``read_bounded`` is how lyrics files, MIDI files and manifests are read: the path is
``stat``-ed before it is opened (a FIFO would block ``open`` until a writer appears, a device
such as ``/dev/zero`` never ends), opened non-blocking, checked again on the open descriptor
(the path may have been swapped in between), and read up to the limit.

``atomic_write`` is how every file the package writes is replaced (engine files, checkpoints,
feature caches, splits, corpus files, batch results): readers see the old or the new file,
never a partial one.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable, Union

from ..errors import FileLimitError, InputFileError


def check_regular(path, max_bytes: float, limit: str, what: str = "file") -> int:
    """Size of ``path`` in bytes; ``InputFileError`` unless it is an existing regular file,
    ``FileLimitError`` when it is larger than ``max_bytes``. Opens nothing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        exc = InputFileError(path, f"{what} not found")
        exc.missing = True
        raise exc from None
    except OSError as exc:
        raise InputFileError(path, f"{what}: {exc.strerror or exc}") from None
    _check_stat(path, st, max_bytes, limit, what)
    return st.st_size


def _check_stat(path, st: os.stat_result, max_bytes: float, limit: str, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else
                "a FIFO" if stat.S_ISFIFO(st.st_mode) else
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise InputFileError(path, f"{what} is {kind}, not a regular file")
    if st.st_size > max_bytes:
        raise FileLimitError(path, st.st_size, max_bytes, limit, what)


def read_bounded(path, max_bytes: float, limit: str, what: str = "file") -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them.

    Raises:
        InputFileError: missing, or not a regular file (FIFO, device, directory, socket).
        FileLimitError: larger than ``max_bytes`` (``limit`` names the ``InputLimits`` field).
    """
    check_regular(path, max_bytes, limit, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InputFileError(path, f"{what}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        _check_stat(path, os.fstat(fd), max_bytes, limit, what)
        try:
            data = fh.read(int(max_bytes) + 1)
        except OSError as exc:  # e.g. EIO from /proc/self/mem, a "regular file" of size 0
            raise InputFileError(path, f"{what}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:  # grew after the check
        raise FileLimitError(path, len(data), max_bytes, limit, what)
    return data


def json_depth_exceeds(obj, max_depth: int) -> bool:
    """Whether objects/arrays in ``obj`` nest deeper than ``max_depth`` (iterative walk)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > max_depth:
                return True
            children = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in children if isinstance(v, (dict, list)))
    return False


def loads_bounded(blob, max_bytes: float, max_depth: int):
    """``json.loads`` of ``blob`` (bytes or str) within a size and a nesting limit.

    Raises:
        ValueError: with the reason (too large, too deep, not UTF-8, not JSON); callers turn
            it into their file's typed error (``EngineFileError``, ``CheckpointError``).
    """
    import json

    if len(blob) > max_bytes:
        raise ValueError(f"JSON of {len(blob)} bytes exceeds {int(max_bytes)} "
                         "(InputLimits.max_json_bytes)")
    try:
        text = blob.decode("utf-8") if isinstance(blob, (bytes, bytearray)) else blob
        obj = json.loads(text)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {max_depth} levels "
                         "(InputLimits.max_json_depth)") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if json_depth_exceeds(obj, max_depth):
        raise ValueError(f"JSON nested deeper than {max_depth} levels "
                         "(InputLimits.max_json_depth)")
    return obj


def fsync_dir(path) -> None:
    """fsync a folder (a rename into it survives a power cut); best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Union[str, os.PathLike], write: Callable[[str], None], *,
                 sync_dir: bool = False) -> Path:
    """Call ``write(tmp_path)`` on a temporary file in ``path``'s folder (created if needed),
    fsync it and rename it over ``path``; the temporary file is removed on any failure.
    ``sync_dir``: also fsync the folder afterwards. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(path.parent)
    return path
