"""User data sets: a CSV/JSONL manifest or a ``root/<label>/<file>`` folder -> ``Dataset``.

Manifest columns (CSV header or JSONL keys):

==============  ==========================================================================
``path``        audio file (required); relative paths resolve against the manifest's folder
``label``       one or more labels, ``|``-separated (JSONL may also give a list)
``id``          optional unique id (default: ``path`` as written)
``lyrics``      optional lyrics text
``lyrics_path`` optional UTF-8 text file holding the lyrics (not both with ``lyrics``)
``title``       optional
``artist``      optional
``midi_path``   optional MIDI/score file (symbolic modality)
``group``       optional: records sharing a group always land in the same split
anything else   kept verbatim in ``Record.extra``
==============  ==========================================================================

Validation reads the whole file and raises ONE ``ManifestError`` listing every bad row, each
problem starting with ``line N:`` (1-based line of the manifest file; the CSV header is line 1).
"""
from __future__ import annotations

import csv
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from ..errors import ManifestError

#: columns with a meaning; every other column goes to ``Record.extra``
KNOWN_COLUMNS = ("id", "path", "label", "lyrics", "lyrics_path", "title", "artist",
                 "midi_path", "group")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
#: sidecar files picked up next to an audio file in a folder data set (same stem)
LYRICS_SIDECAR = ".txt"
MIDI_SIDECARS = (".mid", ".midi")


@dataclass(frozen=True)
class Record:
    """One labelled item of a data set.

    Attributes:
        id: the ``id`` column if present, else the path as written in the manifest
            (folder data sets: the path relative to the root, ``/``-separated).
        path: absolute audio path.
        labels: one or more labels (stripped, de-duplicated, in the order written).
        lyrics: lyrics text (inline or read from ``lyrics_path``); None when absent or blank.
        title, artist: optional metadata (None when absent or blank).
        midi_path: absolute path of a MIDI/score file, or None.
        group: records sharing a group are never split apart; None = no group.
        line: 1-based manifest line of the record (0 for folder data sets).
        extra: all other columns, verbatim (JSON-safe).
    """

    id: str
    path: Path
    labels: tuple[str, ...]
    lyrics: str | None = None
    title: str | None = None
    artist: str | None = None
    midi_path: Path | None = None
    group: str | None = None
    line: int = 0
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Dataset:
    """A validated list of records plus the label vocabulary.

    Attributes:
        records: in manifest order (folder data sets: sorted by path).
        labels: sorted unique label names; class index = position in this list.
        multilabel: True when at least one record carries more than one label.
        source: the manifest file or the data folder.
    """

    records: list[Record]
    labels: list[str]
    multilabel: bool
    source: Path

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    def label_indices(self) -> np.ndarray:
        """Targets: ``(N,)`` int64 class indices (single-label) or ``(N, C)`` float32 multi-hot."""
        index = {name: i for i, name in enumerate(self.labels)}
        if not self.multilabel:
            return np.array([index[r.labels[0]] for r in self.records], dtype=np.int64)
        out = np.zeros((len(self.records), len(self.labels)), dtype=np.float32)
        for i, r in enumerate(self.records):
            out[i, [index[name] for name in r.labels]] = 1.0
        return out


def read_text(path, *, what: str = "file") -> str:
    """Read ``path`` as UTF-8 (BOM allowed); invalid bytes become U+FFFD with a warning."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        warnings.warn(
            f"{path}: {what} is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
            "undecodable bytes were replaced with U+FFFD",
            UnicodeWarning,
            stacklevel=3,
        )
        return data.decode("utf-8-sig", errors="replace")


def _blank_to_none(value) -> Optional[str]:
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


def _split_labels(value) -> tuple:
    if value is None:
        return ()
    parts = value if isinstance(value, (list, tuple)) else str(value).split("|")
    out = []
    for p in parts:
        p = str(p).strip()
        if p and p not in out:
            out.append(p)
    return tuple(out)


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _build_records(rows: Iterable, base: Path, problems: list) -> list:
    """Turn ``(line, dict)`` rows into records, appending every problem found to ``problems``."""
    records = []
    seen: dict = {}
    for line, row in rows:
        bad = []
        raw_path = row.get("path")
        raw_path = None if raw_path is None else str(raw_path).strip()
        if not raw_path:
            bad.append("missing or empty 'path'")
        labels = _split_labels(row.get("label"))
        if not labels:
            bad.append("missing or empty 'label'")
        rid = _blank_to_none(row.get("id"))
        rid = rid.strip() if rid is not None else raw_path
        if rid:
            if rid in seen:
                bad.append(f"duplicate id {rid!r} (first on line {seen[rid]})")
            else:
                seen[rid] = line
        path = None
        if raw_path:
            path = _resolve(base, raw_path)
            if not path.is_file():
                bad.append(f"audio file not found: {path}")
        lyrics = _blank_to_none(row.get("lyrics"))
        lyrics_path = _blank_to_none(row.get("lyrics_path"))
        if lyrics_path is not None:
            lp = _resolve(base, lyrics_path.strip())
            if lyrics is not None:
                bad.append("both 'lyrics' and 'lyrics_path' given")
            elif not lp.is_file():
                bad.append(f"lyrics file not found: {lp}")
            else:
                lyrics = _blank_to_none(read_text(lp, what="lyrics file"))
        midi = _blank_to_none(row.get("midi_path"))
        midi_path = None
        if midi is not None:
            midi_path = _resolve(base, midi.strip())
            if not midi_path.is_file():
                bad.append(f"MIDI file not found: {midi_path}")
        if bad:
            problems.extend(f"line {line}: {b}" for b in bad)
            continue
        group = _blank_to_none(row.get("group"))
        records.append(Record(
            id=rid,
            path=path,
            labels=labels,
            lyrics=lyrics,
            title=_blank_to_none(row.get("title")),
            artist=_blank_to_none(row.get("artist")),
            midi_path=midi_path,
            group=group.strip() if group is not None else None,
            line=line,
            extra={k: v for k, v in row.items() if k not in KNOWN_COLUMNS},
        ))
    return records


def _csv_rows(text: str, problems: list):
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    header = [h.strip() for h in header]
    for col in ("path", "label"):
        if col not in header:
            problems.append(f"line 1: header has no '{col}' column (columns: {header})")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        problems.append(f"line 1: duplicate column(s) {dupes}")
    if problems:
        return
    start = reader.line_num + 1
    for values in reader:
        line, start = start, reader.line_num + 1
        if not any(v.strip() for v in values):
            continue
        if len(values) > len(header):
            problems.append(f"line {line}: {len(values)} fields but the header has {len(header)}")
            continue
        yield line, dict(zip(header, values))


def _jsonl_rows(text: str, problems: list):
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(f"line {line}: bad JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(row, dict):
            problems.append(f"line {line}: expected a JSON object, got {type(row).__name__}")
            continue
        yield line, row


def _finish(records: list, source: Path, problems: list) -> Dataset:
    if problems:
        raise ManifestError(source, problems)
    if not records:
        raise ManifestError(source, ["no records"])
    labels = sorted({name for r in records for name in r.labels})
    multilabel = any(len(r.labels) > 1 for r in records)
    return Dataset(records=records, labels=labels, multilabel=multilabel, source=source)


def load_manifest(path) -> Dataset:
    """Read and validate a ``.csv`` or ``.jsonl`` (``.ndjson``) manifest.

    The file is decoded as UTF-8 (a BOM is allowed); invalid bytes are replaced with U+FFFD
    and a ``UnicodeWarning`` names the file.

    Raises:
        ManifestError: listing every bad row (``line N: ...``), or ``no records``.
    """
    source = Path(path).expanduser().resolve()
    if not source.is_file():
        raise ManifestError(source, ["manifest file not found"])
    suffix = source.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise ManifestError(source, [f"unknown manifest type {suffix!r} (use .csv or .jsonl)"])
    text = read_text(source, what="manifest")
    problems: list = []
    rows = _csv_rows(text, problems) if suffix == ".csv" else _jsonl_rows(text, problems)
    records = _build_records(rows, source.parent, problems)
    return _finish(records, source, problems)


def load_folder(root, extensions=AUDIO_EXTENSIONS) -> Dataset:
    """Read a ``root/<label>/<file>`` layout (files may sit in sub-folders of a label folder).

    The label is the first folder below ``root``; the id is the path relative to ``root``
    (``/``-separated). Extensions match case-insensitively; hidden files and folders are
    skipped. A sidecar ``<stem>.txt`` next to an audio file is its lyrics, a ``<stem>.mid``
    (or ``.midi``) its symbolic part. Audio files directly in ``root`` have no label and are
    reported as problems.

    Raises:
        ManifestError: unlabelled files, or ``no records``.
    """
    source = Path(root).expanduser().resolve()
    if not source.is_dir():
        raise ManifestError(source, ["data folder not found"])
    exts = tuple(e.lower() for e in extensions)
    problems = []
    records = []
    for p in sorted(source.rglob("*")):
        rel = p.relative_to(source)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if not p.is_file() or p.suffix.lower() not in exts:
            continue
        if len(rel.parts) < 2:
            problems.append(f"{rel.as_posix()}: audio file directly in the data folder "
                            "(put it in a <label>/ folder)")
            continue
        sidecar = p.with_suffix(LYRICS_SIDECAR)
        lyrics = _blank_to_none(read_text(sidecar, what="lyrics file")) if sidecar.is_file() else None
        midi = next((m for m in (p.with_suffix(s) for s in MIDI_SIDECARS) if m.is_file()), None)
        records.append(Record(id=rel.as_posix(), path=p, labels=(rel.parts[0],), lyrics=lyrics,
                              midi_path=midi, line=0))
    return _finish(records, source, problems)


def load_dataset(path) -> Dataset:
    """A folder -> ``load_folder``; a file -> ``load_manifest``."""
    p = Path(path).expanduser()
    if p.is_dir():
        return load_folder(p)
    if p.is_file():
        return load_manifest(p)
    raise ManifestError(p, ["no such file or folder"])
