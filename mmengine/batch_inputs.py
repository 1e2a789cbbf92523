"""The inputs of ``mmengine batch`` and the identity of its engine: ``BatchInput``, INPUT read
as a folder of audio or as a manifest (ids checked unique), and the SHA-256 and version of the
engine file that every result row carries. Separate from the driver (``mmengine.batch``, which
re-exports every name here) and from the runners: what a batch classifies is the same in this
process and on Ray, and reading it knows nothing of how results are classified or stored.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from .errors import ManifestError


# ------------------------------------------------------------------------------- inputs
@dataclass
class BatchInput:
    """One input of a batch: its id, audio path, text and MIDI; ``error_type``/``error`` when
    it is known to be unusable before classification (a bad manifest row)."""

    id: str
    path: Optional[str]
    text: Optional[str] = None
    midi: Optional[str] = None
    error_type: Optional[str] = None
    error: Optional[str] = None


def read_manifest_inputs(path, text_field: Optional[str] = "lyrics") -> List[BatchInput]:
    """The inputs of a CSV/JSONL manifest, read by inference's manifest reader
    (``mmengine.runtime.engine.read_inference_manifest``: the one place batch parses a
    manifest). A row without an id is keyed by its path; a row that cannot be used keeps its
    error and is keyed ``<row N>`` when it has no path either."""
    from .runtime.engine import read_inference_manifest

    out = []
    for item in read_inference_manifest(path, text_field):
        key = item.id or item.path or f"<row {item.index + 1}>"
        text = item.text if isinstance(item.text, str) else None
        inp = BatchInput(id=str(key), path=item.path, text=text, midi=item.midi)
        if item.error is not None:
            inp.error_type, inp.error = type(item.error).__name__, str(item.error)
        out.append(inp)
    return out


def read_folder_inputs(root) -> List[BatchInput]:
    """Every audio file under ``root`` (recursively, by the extensions the decoder knows:
    ``mmengine.data.audio.KNOWN_EXTENSIONS``), sorted; id = the path relative to ``root``."""
    from .data.audio import KNOWN_EXTENSIONS

    root = Path(root).expanduser().resolve()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in KNOWN_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return [BatchInput(id=p.relative_to(root).as_posix(), path=str(p)) for p in sorted(found)]


def read_batch_inputs(source, text_field: Optional[str] = "lyrics") -> List[BatchInput]:
    """INPUT of ``mmengine batch``: a folder of audio or a manifest. Raises ``ManifestError``
    for a missing source, an unknown kind of file, or ids that are not unique."""
    from .runtime.engine import MANIFEST_SUFFIXES

    p = Path(source).expanduser()
    if p.is_dir():
        items = read_folder_inputs(p)
    elif p.suffix.lower() in MANIFEST_SUFFIXES:
        items = read_manifest_inputs(p, text_field)
    elif not p.exists():
        raise ManifestError(p, ["no such file or folder"])
    else:
        raise ManifestError(p, [f"not a folder nor a manifest ({', '.join(MANIFEST_SUFFIXES)})"])
    seen: Counter = Counter(it.id for it in items)
    dups = [k for k, n in seen.items() if n > 1]
    if dups:
        raise ManifestError(p, [f"id {k!r} appears {seen[k]} times" for k in dups[:20]]
                            + ([f"... and {len(dups) - 20} more"] if len(dups) > 20 else [])
                            + ["results are keyed by id: give each row its own id"])
    return items


# ------------------------------------------------------------------------------- engine
def file_sha256(path) -> str:
    """Hex SHA-256 of a whole file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def engine_identity(path) -> dict:
    """``engine_sha256``, ``engine_version`` and the ``text_field`` of an engine file (its
    header is checked; the payload is checked when an engine loads it)."""
    from .runtime.engine_file import read_header

    header = read_header(path)
    return {"engine_sha256": file_sha256(path),
            "engine_version": str(header.get("mmengine_version", "")),
            "text_field": header.get("text_field") or "lyrics"}
