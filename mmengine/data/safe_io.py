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
import math
import os
import stat
import struct
import tempfile
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

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


#: safetensors dtype -> bytes per element
_ST_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
              "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}


def safetensors_index(data: bytes, max_json: float, max_depth: int,
                      body_size: Optional[int] = None
                      ) -> Tuple[Dict[str, Tuple[str, Tuple[int, ...], int, int]], int, dict]:
    """``({name: (dtype, shape, begin, end)}, body offset, metadata)`` of safetensors bytes:
    the header read within the JSON limits, every tensor's byte range checked against its
    dtype, shape and the body (``ValueError``); ``begin``/``end`` count from the body offset."""
    if len(data) < 8:
        raise ValueError("safetensors payload shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > max_json or 8 + n > len(data):
        raise ValueError(f"safetensors header length {n} exceeds the payload or "
                         "InputLimits.max_json_bytes")
    head = loads_bounded(bytes(data[8:8 + n]), max_json, max_depth)
    if not isinstance(head, dict):
        raise ValueError("safetensors header is not an object")
    body = len(data) - 8 - n if body_size is None else body_size
    out = {}
    for name, t in head.items():
        if name == "__metadata__":
            continue
        if (not isinstance(t, dict) or t.get("dtype") not in _ST_DTYPES
                or not isinstance(t.get("shape"), list)
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                           for x in t["shape"])
                or not isinstance(t.get("data_offsets"), list) or len(t["data_offsets"]) != 2):
            raise ValueError(f"safetensors entry {name!r} is malformed")
        a, b = t["data_offsets"]
        count = math.prod(t["shape"])
        if not (isinstance(a, int) and isinstance(b, int) and 0 <= a <= b <= body
                and b - a == count * _ST_DTYPES[t["dtype"]]):
            raise ValueError(f"safetensors entry {name!r}: bytes {a}..{b} do not hold "
                             f"{t['shape']} {t['dtype']} within the {body}-byte body")
        out[name] = (t["dtype"], tuple(t["shape"]), a, b)
    meta = head.get("__metadata__")
    return out, 8 + n, meta if isinstance(meta, dict) else {}
