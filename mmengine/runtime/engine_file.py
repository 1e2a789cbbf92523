"""The engine file (``.mme``): one self-describing file per built engine.

Layout (all integers little-endian)::

    offset 0        8 bytes   magic b"MMENGINE"
    offset 8        u32       format version (``FORMAT_VERSION``)
    offset 12       u64       header length N in bytes
    offset 20       N bytes   UTF-8 JSON header (an object)
    offset 20 + N   payload   exactly ``header["payload_size"]`` bytes, to the end of the file

Header keys written by ``write_engine_file`` (callers add the model description)::

    format            "mmengine-engine"
    format_version    FORMAT_VERSION (same as the u32 above)
    backend           the backend the payload was built for: native | onnx | tensorrt | torch
    payload_format    "safetensors" | "onnx" | "tensorrt-plan"
    payload_size      bytes of the payload
    payload_sha256    hex SHA-256 of the payload
    dtype             "fp32" | "bf16" | "fp16"
    created           UTC ISO-8601 time of writing
    mmengine_version  version of the package that wrote the file
    + labels, multilabel, model, audio, frontend, text, io, ... (see ``mmengine.export``)

Reading refuses, with ``EngineFileError`` naming the reason: a path that is not a regular
file or is larger than ``InputLimits.max_engine_bytes``, a file too short to hold the fixed
part, a wrong magic (a foreign file), a format version newer than this code (or 0), a header
longer than ``InputLimits.max_json_bytes`` or nested deeper than ``max_json_depth``, a header
that is not a JSON object or lacks a required key, a payload shorter or longer than
``payload_size`` (truncated / trailing bytes), and a payload whose SHA-256 differs (tampered).
The payload is handed back as bytes; callers parse it only as safetensors, ONNX protobuf or a
TensorRT plan: nothing in the file is ever executed as Python (no pickle, no eval).

Writing is atomic: a temporary file in the target folder, fsync, then ``os.replace``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..config import InputLimits
from ..data.safe_io import atomic_write
from ..errors import EngineFileError, InputFileError

MAGIC = b"MMENGINE"
FORMAT = "mmengine-engine"
FORMAT_VERSION = 1
_FIXED = struct.Struct("<8sIQ")  # magic, version, header length
FIXED_SIZE = _FIXED.size  # 20
#: refuse headers larger than this (a foreign file could claim gigabytes)
MAX_HEADER_BYTES = 64 * 1024 * 1024
PAYLOAD_FORMATS = ("safetensors", "onnx", "tensorrt-plan")
DTYPES = ("fp32", "bf16", "fp16")
REQUIRED_KEYS = ("format", "format_version", "backend", "payload_format", "payload_size",
                 "payload_sha256", "dtype")

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class EngineFile:
    """A verified engine file: its JSON ``header`` (dict) and raw ``payload`` (bytes)."""

    header: dict
    payload: bytes
    path: str = ""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_header(backend: str, payload_format: str, dtype: str, payload: bytes,
                extra: dict) -> dict:
    """The full header for ``payload``: the fixed keys above, then ``extra`` (which may not
    override them)."""
    from .. import __version__

    if payload_format not in PAYLOAD_FORMATS:
        raise ValueError(f"payload_format must be one of {PAYLOAD_FORMATS}, got {payload_format!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backend": backend,
        "payload_format": payload_format,
        "payload_size": len(payload),
        "payload_sha256": sha256_hex(payload),
        "dtype": dtype,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mmengine_version": __version__,
    }
    clash = sorted(set(extra) & set(header))
    if clash:
        raise ValueError(f"extra header keys may not override fixed keys: {clash}")
    header.update(extra)
    return header


def encode(header: dict, payload: bytes) -> bytes:
    """Bytes of a complete engine file (header checked against ``payload``)."""
    if header.get("payload_size") != len(payload) or \
            header.get("payload_sha256") != sha256_hex(payload):
        raise ValueError("header payload_size/payload_sha256 do not describe this payload "
                         "(build the header with make_header)")
    blob = json.dumps(header, ensure_ascii=False, sort_keys=True, allow_nan=False).encode("utf-8")
    return _FIXED.pack(MAGIC, FORMAT_VERSION, len(blob)) + blob + payload


def write_engine_file(path: PathLike, header: dict, payload: bytes) -> Path:
    """Atomically write ``header`` + ``payload`` to ``path``; returns the path."""
    path = Path(path)
    data = encode(header, payload)
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _parse_fixed(path: str, head: bytes, max_header: float = MAX_HEADER_BYTES) -> tuple:
    """Check the fixed 20-byte part; return (format version, header length)."""
    if len(head) < FIXED_SIZE:
        if MAGIC.startswith(head[:len(MAGIC)]) and head:
            raise EngineFileError(path, f"truncated: {len(head)} bytes, shorter than the "
                                  f"{FIXED_SIZE}-byte fixed header")
        raise EngineFileError(path, "foreign file (no MMENGINE magic bytes)")
    magic, version, n = _FIXED.unpack(head[:FIXED_SIZE])
    if magic != MAGIC:
        raise EngineFileError(path, f"foreign file (magic bytes {magic!r}, expected {MAGIC!r})")
    if version > FORMAT_VERSION:
        raise EngineFileError(path, f"format version {version} is newer than this mmengine "
                              f"understands ({FORMAT_VERSION}); upgrade mmengine-music")
    if version < 1:
        raise EngineFileError(path, f"invalid format version {version}")
    if n > max_header:
        raise EngineFileError(path, f"header length {n} bytes exceeds {int(max_header)} "
                              "(InputLimits.max_json_bytes)")
    return version, n


def _parse_header(path: str, blob: bytes, version: int, n: int,
                  limits: Optional[InputLimits] = None) -> dict:
    from ..data.safe_io import loads_bounded

    limits = limits or InputLimits()
    if len(blob) < n:
        raise EngineFileError(path, f"truncated: header needs {n} bytes, only {len(blob)} present")
    try:
        header = loads_bounded(blob, limits.max_json_bytes, limits.max_json_depth)
    except ValueError as exc:
        raise EngineFileError(path, f"header is not valid UTF-8 JSON within the limits: "
                              f"{exc}") from None
    if not isinstance(header, dict):
        raise EngineFileError(path, f"header is a JSON {type(header).__name__}, not an object")
    missing = [k for k in REQUIRED_KEYS if k not in header]
    if missing:
        raise EngineFileError(path, f"header lacks required key(s) {missing}")
    if header["format"] != FORMAT:
        raise EngineFileError(path, f"header format {header['format']!r}, expected {FORMAT!r}")
    if header["format_version"] != version:
        raise EngineFileError(path, f"header says format version {header['format_version']!r}, "
                              f"the fixed part says {version}")
    if header["payload_format"] not in PAYLOAD_FORMATS:
        raise EngineFileError(path, f"unknown payload format {header['payload_format']!r}")
    size = header["payload_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise EngineFileError(path, f"invalid payload_size {size!r}")
    return header


def _check_file(p: str, limits: InputLimits) -> None:
    from ..data.safe_io import check_regular

    try:
        check_regular(p, limits.max_engine_bytes, "max_engine_bytes", "engine file")
    except InputFileError as exc:
        raise EngineFileError(p, exc.detail) from None


def read_header(path: PathLike, limits: Optional[InputLimits] = None) -> dict:
    """The verified-shape header of an engine file, without reading or checking the payload
    (for inspection: ``read_engine_file`` is what loaders use)."""
    p = str(path)
    limits = limits or InputLimits()
    _check_file(p, limits)
    with open(path, "rb") as f:
        version, n = _parse_fixed(p, f.read(FIXED_SIZE), limits.max_json_bytes)
        return _parse_header(p, f.read(n), version, n, limits)


def decode(data: bytes, path: str = "<bytes>",
           limits: Optional[InputLimits] = None) -> EngineFile:
    """Verify and split the bytes of an engine file (see the module docstring for refusals)."""
    limits = limits or InputLimits()
    version, n = _parse_fixed(path, data[:FIXED_SIZE], limits.max_json_bytes)
    header = _parse_header(path, data[FIXED_SIZE:FIXED_SIZE + n], version, n, limits)
    payload = data[FIXED_SIZE + n:]
    size = header["payload_size"]
    if len(payload) < size:
        raise EngineFileError(path, f"truncated: payload has {len(payload)} of {size} bytes")
    if len(payload) > size:
        raise EngineFileError(path, f"{len(payload) - size} unexpected trailing byte(s) after "
                              f"the {size}-byte payload")
    digest = sha256_hex(payload)
    if digest != header["payload_sha256"]:
        raise EngineFileError(path, "payload checksum mismatch (file is corrupted or was "
                              f"modified): sha256 {digest[:16]}…, header says "
                              f"{str(header['payload_sha256'])[:16]}…")
    return EngineFile(header=header, payload=payload, path=path)


def read_engine_file(path: PathLike, limits: Optional[InputLimits] = None) -> EngineFile:
    """Read and verify an engine file: regular file within ``limits``, magic, version,
    header (size, depth), payload size and SHA-256."""
    p = str(path)
    limits = limits or InputLimits()
    _check_file(p, limits)
    data = Path(path).read_bytes()
    return decode(data, p, limits)
