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

One parser serves training (``load_manifest``: a label is required) and classification
(``read_inference_rows``: labels optional, each bad row becomes that row's error and the
others still run). The manifest, and every lyrics, MIDI and (training) audio file it names,
must be a regular file within ``InputLimits`` (a FIFO or ``/dev/zero`` is refused without
being opened; inline ``lyrics``/``title`` within ``max_text_bytes``).

Validation reads the whole file and raises ONE ``ManifestError`` listing every bad row, each
problem starting with ``line N:`` (1-based line of the manifest file; the CSV header is line 1).
"""
from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..config import InputLimits
from ..errors import InputFileError, ManifestError
from .safe_io import check_regular, loads_bounded, read_bounded

#: columns with a meaning; every other column goes to ``Record.extra``
KNOWN_COLUMNS = ("id", "path", "label", "lyrics", "lyrics_path", "title", "artist",
                 "midi_path", "group")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson")
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


def read_text(path, *, what: str = "file", max_bytes: Optional[float] = None,
              limit: str = "max_text_bytes") -> str:
    """Read the regular file ``path`` as UTF-8 (BOM allowed); invalid bytes become U+FFFD with
    a warning. At most ``max_bytes`` bytes (default ``InputLimits().max_text_bytes``; ``limit``
    names the field in the error).

    Raises:
        InputFileError: missing, or not a regular file (a FIFO or ``/dev/zero`` is never
            opened); ``FileLimitError`` when larger than ``max_bytes``.
    """
    if max_bytes is None:
        max_bytes = InputLimits().max_text_bytes
    data = read_bounded(path, max_bytes, limit, what)
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


def _unusable_name(value) -> Optional[str]:
    """Why ``value`` cannot name a file (a NUL byte, a character the file system encoding
    cannot hold, such as a lone surrogate from a JSON escape), or None."""
    s = "" if value is None else str(value)
    if "\x00" in s:
        return "contains a NUL byte"
    try:
        os.fsencode(s)
    except UnicodeEncodeError as exc:
        return f"cannot be a file name ({exc.reason}: {s[exc.start:exc.end]!r})"
    return None


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    try:
        p = p.expanduser()
    except RuntimeError:  # "~name" of no such user: an ordinary relative name
        pass
    return p if p.is_absolute() else (base / p).resolve()


def _text_problem(value: Optional[str], name: str, limits: InputLimits) -> Optional[str]:
    if value is not None and len(value.encode("utf-8", "surrogatepass")) > limits.max_text_bytes:
        return (f"'{name}' holds more than {limits.max_text_bytes} bytes "
                "(InputLimits.max_text_bytes)")
    return None


def _file_problem(exc: InputFileError, path: Path, what: str) -> str:
    return f"{what} not found: {path}" if exc.missing else f"{path}: {exc.detail}"


def _record(line: int, row: dict, base: Path, limits: InputLimits, *, training: bool,
            read_lyrics: bool = True) -> Tuple[Optional[Record], List[str]]:
    """One manifest row -> (record or None, problems). ``training``: a label is required and
    the audio file must be a regular file under ``max_file_bytes`` (inference leaves the audio
    to the decoder's typed errors, and the id defaults to the resolved path). Lyrics and MIDI
    files must be regular files under their byte limits (a FIFO or a device is refused
    without being opened); ``read_lyrics`` False leaves ``lyrics_path`` unread."""
    unusable = [(k, why) for k in ("path", "lyrics_path", "midi_path")
                for why in [_unusable_name(row.get(k))] if why]
    if unusable:  # no file can have such a name (os.stat raises ValueError on it)
        return None, [f"line {line}: '{k}' {why}" for k, why in unusable]
    bad = []
    raw_path = row.get("path")
    raw_path = None if raw_path is None else str(raw_path).strip()
    if not raw_path:
        bad.append("missing or empty 'path'")
    labels = _split_labels(row.get("label"))
    if training and not labels:
        bad.append("missing or empty 'label'")
    path = _resolve(base, raw_path) if raw_path else None
    if path is not None and training:
        try:
            check_regular(path, limits.max_file_bytes, "max_file_bytes", "audio file")
        except InputFileError as exc:
            bad.append(_file_problem(exc, path, "audio file"))
    rid = _blank_to_none(row.get("id"))
    rid = rid.strip() if rid is not None else (raw_path if training else
                                               (str(path) if path is not None else None))
    lyrics = _blank_to_none(row.get("lyrics"))
    title = _blank_to_none(row.get("title"))
    for name, value in (("lyrics", lyrics), ("title", title)):
        problem = _text_problem(value, name, limits)
        if problem:
            bad.append(problem)
    lyrics_path = _blank_to_none(row.get("lyrics_path"))
    if lyrics_path is not None and read_lyrics:
        lp = _resolve(base, lyrics_path.strip())
        if lyrics is not None:
            bad.append("both 'lyrics' and 'lyrics_path' given")
        else:
            try:
                lyrics = _blank_to_none(read_text(lp, what="lyrics file",
                                                  max_bytes=limits.max_text_bytes))
            except InputFileError as exc:
                bad.append(_file_problem(exc, lp, "lyrics file"))
    midi = _blank_to_none(row.get("midi_path"))
    midi_path = None
    if midi is not None:
        midi_path = _resolve(base, midi.strip())
        try:
            check_regular(midi_path, limits.max_midi_bytes, "max_midi_bytes", "MIDI file")
        except InputFileError as exc:
            bad.append(_file_problem(exc, midi_path, "MIDI file"))
    if bad:
        return None, [f"line {line}: {b}" for b in bad]
    group = _blank_to_none(row.get("group"))
    return Record(
        id=rid,
        path=path,
        labels=labels,
        lyrics=lyrics,
        title=title,
        artist=_blank_to_none(row.get("artist")),
        midi_path=midi_path,
        group=group.strip() if group is not None else None,
        line=line,
        extra={k: v for k, v in row.items() if k not in KNOWN_COLUMNS},
    ), []


def _csv_rows(text: str, required: Sequence[str]) -> Iterator[Tuple[int, Union[dict, str]]]:
    """(line, row dict) or (line, problem) of a CSV manifest; header problems raise
    ``_HeaderProblems``."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise _HeaderProblems([f"line 1: {exc}"]) from None
    header = [h.strip() for h in header]
    problems = [f"line 1: header has no '{col}' column (columns: {header})"
                for col in required if col not in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        problems.append(f"line 1: duplicate column(s) {dupes}")
    if problems:
        raise _HeaderProblems(problems)
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line, start = start, reader.line_num + 1
            yield line, f"malformed CSV ({exc})"
            continue
        line, start = start, reader.line_num + 1
        if not any(v.strip() for v in values):
            continue
        if len(values) > len(header):
            yield line, f"{len(values)} fields but the header has {len(header)}"
            continue
        yield line, dict(zip(header, values))


def _jsonl_rows(text: str, limits: InputLimits) -> Iterator[Tuple[int, Union[dict, str]]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = loads_bounded(raw, limits.max_json_bytes, limits.max_json_depth)
        except ValueError as exc:
            yield line, f"bad JSON ({exc})"
            continue
        if not isinstance(row, dict):
            yield line, f"expected a JSON object, got {type(row).__name__}"
            continue
        yield line, row


class _HeaderProblems(Exception):
    def __init__(self, problems):
        self.problems = problems


def _manifest_rows(path, limits: InputLimits, required: Sequence[str]):
    """(source, rows): the manifest file read within ``max_manifest_bytes`` and its rows as
    (line, dict) or (line, problem). ``ManifestError`` for an unreadable file or header."""
    source = Path(path).expanduser().resolve()
    suffix = source.suffix.lower()
    try:
        check_regular(source, limits.max_manifest_bytes, "max_manifest_bytes", "manifest")
    except InputFileError as exc:
        raise ManifestError(source, ["manifest file not found" if exc.missing
                                     else exc.detail]) from None
    if suffix not in MANIFEST_SUFFIXES:
        raise ManifestError(source, [f"unknown manifest type {suffix!r} (use .csv or .jsonl)"])
    try:
        text = read_text(source, what="manifest", max_bytes=limits.max_manifest_bytes,
                         limit="max_manifest_bytes")
    except InputFileError as exc:
        raise ManifestError(source, [exc.detail]) from None
    rows = _csv_rows(text, required) if suffix == ".csv" else _jsonl_rows(text, limits)
    try:
        return source, list(rows)
    except _HeaderProblems as exc:
        raise ManifestError(source, exc.problems) from None


def _finish(records: list, source: Path, problems: list) -> Dataset:
    if problems:
        raise ManifestError(source, problems)
    if not records:
        raise ManifestError(source, ["no records"])
    labels = sorted({name for r in records for name in r.labels})
    multilabel = any(len(r.labels) > 1 for r in records)
    return Dataset(records=records, labels=labels, multilabel=multilabel, source=source)


def load_manifest(path, limits: Optional[InputLimits] = None) -> Dataset:
    """Read and validate a ``.csv`` or ``.jsonl`` (``.ndjson``) manifest for training.

    The file is decoded as UTF-8 (a BOM is allowed); invalid bytes are replaced with U+FFFD
    and a ``UnicodeWarning`` names the file. The manifest, and the audio, lyrics and MIDI
    files it names, must be regular files within ``limits`` (default ``InputLimits()``).

    Raises:
        ManifestError: listing every bad row (``line N: ...``), or ``no records``.
    """
    limits = limits or InputLimits()
    source, rows = _manifest_rows(path, limits, ("path", "label"))
    problems: list = []
    records: list = []
    seen: dict = {}
    for line, row in rows:
        if isinstance(row, str):
            problems.append(f"line {line}: {row}")
            continue
        rec, bad = _record(line, row, source.parent, limits, training=True)
        rid = rec.id if rec is not None else (_blank_to_none(row.get("id")) or
                                              _blank_to_none(row.get("path")))
        rid = rid.strip() if rid else rid
        if rid:
            if rid in seen:
                bad.insert(0, f"line {line}: duplicate id {rid!r} (first on line {seen[rid]})")
            else:
                seen[rid] = line
        if bad:
            problems.extend(bad)
        else:
            records.append(rec)
    return _finish(records, source, problems)


def read_inference_rows(path, *, read_lyrics: bool = True,
                        limits: Optional[InputLimits] = None
                        ) -> List[Tuple[int, Union[Record, ManifestError], Optional[dict]]]:
    """The rows of a manifest for classification: ``(line, result, row)``, ``result`` a
    ``Record`` or the ``ManifestError`` of that row (``line N: ...``), ``row`` the row as
    parsed (None when the line is not a JSON object), in file order; blank rows skipped.

    The same parser and checks as ``load_manifest`` except: labels are optional (and
    ignored), the audio file is left to the decoder (whose typed errors name a missing or
    unreadable file), an id defaults to the resolved audio path, duplicate ids are allowed,
    and ``read_lyrics`` False leaves ``lyrics_path`` unread (a model without lyrics).

    Raises:
        ManifestError: the manifest itself is missing, not a regular file, too large, of an
            unknown type, or its CSV header has no ``path`` column.
    """
    limits = limits or InputLimits()
    source, rows = _manifest_rows(path, limits, ("path",))
    out: List[Tuple[int, Union[Record, ManifestError], Optional[dict]]] = []
    for line, row in rows:
        if isinstance(row, str):
            out.append((line, ManifestError(source, [f"line {line}: {row}"]), None))
            continue
        rec, bad = _record(line, row, source.parent, limits, training=False,
                           read_lyrics=read_lyrics)
        out.append((line, rec if rec is not None else ManifestError(source, bad), row))
    return out


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
        lyrics = (_blank_to_none(read_text(sidecar, what="lyrics file"))
                  if sidecar.is_file() else None)
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
