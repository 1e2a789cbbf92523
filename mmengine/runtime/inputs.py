"""The inputs of ``Engine.classify``: one ``_Item`` per input (a file, an array, a manifest
row), the inference manifest reader, and which errors make one input unusable (reported as
its ``ErrorEntry`` while the others run)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ..config import InputLimits
from ..errors import AudioError, InputLimitError, ManifestError, MidiError

#: errors that make one input unusable (reported as its ``ErrorEntry``); others propagate
_ITEM_ERRORS = (AudioError, ManifestError, MidiError, InputLimitError, OSError, ValueError,
                EOFError)


def _without_frames(exc: BaseException) -> BaseException:
    """``exc`` with its traceback and those of the exceptions chained to it dropped. An
    item's error lives as long as the call (every item of a long list waits in memory), and
    its frames would keep the file's bytes and decoded arrays alive: ~1 MB per failed item
    (measured by bench/soak.py)."""
    stack, seen = [exc], set()
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        stack += [e.__cause__, e.__context__]
    return exc


@dataclass
class _Item:
    index: int
    path: Optional[str] = None
    id: Optional[str] = None
    array: Optional[Tuple[np.ndarray, float]] = None
    text: Optional[str] = None
    midi: Optional[str] = None
    error: Optional[Exception] = None  # known bad before decoding (manifest row)


def read_inference_manifest(path, text_field: Optional[str] = "lyrics",
                            limits: Optional[InputLimits] = None) -> List[_Item]:
    """Items of a CSV/JSONL manifest for classification, parsed by the training parser
    (``mmengine.data.manifest.read_inference_rows``): ``path`` is required, ``id``,
    ``lyrics`` / ``lyrics_path``, ``title``, ``midi_path`` optional, labels ignored; relative
    paths resolve against the manifest's folder; the item's text is the ``text_field`` column
    ("lyrics" or "title"). A row with a problem (``line N: ...``: bad JSON, a lyrics or MIDI
    file that is missing, not a regular file or over its ``InputLimits``) becomes an error
    item (the rest still run); an unreadable file or one without a ``path`` column raises
    ``ManifestError``."""
    from ..data.manifest import read_inference_rows

    source = Path(path).expanduser().resolve()
    items = []
    for _, rec, row in read_inference_rows(source, read_lyrics=text_field == "lyrics",
                                           limits=limits):
        item = _Item(index=len(items))
        items.append(item)
        if isinstance(rec, ManifestError):
            item.error = rec
            raw = str((row or {}).get("path") or "").strip()
            item.path = str(source.parent / raw) if raw and not os.path.isabs(raw) else raw or None
            rid = str((row or {}).get("id") or "").strip()
            item.id = rid or item.path
            continue
        item.path, item.id = str(rec.path), rec.id
        item.midi = None if rec.midi_path is None else str(rec.midi_path)
        item.text = getattr(rec, text_field) if text_field in ("lyrics", "title") else None
    return items
