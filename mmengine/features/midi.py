"""Reading MIDI files within ``InputLimits``: a structural walk before mido and pretty_midi.

pretty_midi allocates a float64 time table with one entry per tick up to the last event, and
mido builds one Python object per event, so a small file can ask for gigabytes (one delta of
2^28 ticks is 4 bytes). :func:`read_midi` therefore:

1. reads the file as a regular file of at most ``max_midi_bytes`` (``safe_io.read_bounded``);
2. walks the Standard MIDI File structure itself (header, track chunks, every event's
   variable-length delta, status byte and length) counting events and ticks, without building
   anything: more than ``max_midi_events`` events, a track longer than ``max_midi_ticks``
   ticks or ``max_midi_beats`` beats, a time division of 0 or in SMPTE units, a cut chunk or
   event, or running status without a status byte are refused (``MidiLimitError`` /
   ``MidiError``);
3. only then parses it with mido, and, when its last tick is past ``TABLE_TICKS``, resamples
   every track's ticks to a coarser resolution that fits (event times are kept to within half
   a new tick; the tempo map scales with them, so times in seconds are unchanged up to that
   rounding). pretty_midi's own cap (``MAX_TICK``, 1e7) is never changed: it is a module
   global shared by threads;
4. hands the ``mido.MidiFile`` to pretty_midi (``mido_object=``). Any error of mido or
   pretty_midi on a file that passed the walk becomes a ``MidiError`` naming the file.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Optional

from ..config import InputLimits
from ..data.safe_io import read_bounded
from ..errors import FileLimitError, InputFileError, MidiError, MidiLimitError

#: pretty_midi allocates a float64 time table (and more per tick) up to the last tick: files
#: past this many ticks are resampled to a coarser resolution first. At pretty_midi's own
#: cap (1e7) one file peaked at 264 MB; here the table is 16 MB (built-in data: < 60,000
#: ticks; a 10-minute music21 file at 10,080 ticks per beat keeps ~1,700)
TABLE_TICKS = 2_000_000
#: resampling never goes below this resolution (ticks per beat)
MIN_RESOLUTION = 24

# data bytes of channel messages by the status byte's high nibble
_DATA_BYTES = {0x8: 2, 0x9: 2, 0xA: 2, 0xB: 2, 0xC: 1, 0xD: 1, 0xE: 2}


@dataclass(frozen=True)
class MidiSummary:
    """What the structural walk found: format, tracks, ticks per beat, events (all tracks)
    and the last event's tick (over all tracks)."""

    format: int
    tracks: int
    resolution: int
    events: int
    last_tick: int


def _vlq(data: bytes, pos: int, end: int):
    """(value, next position) of a variable-length quantity (at most 4 bytes), or None."""
    value = 0
    for i in range(4):
        if pos >= end:
            return None
        b = data[pos]
        pos += 1
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            return value, pos
    return None


def scan_midi(data: bytes, path: str = "<bytes>",
              limits: Optional[InputLimits] = None) -> MidiSummary:
    """Walk a Standard MIDI File without building it (see the module docstring).

    Raises:
        MidiLimitError: more events, ticks or beats than ``limits`` allow.
        MidiError: not a MIDI file, an unusable time division, or a cut or malformed chunk.
    """
    limits = limits or InputLimits()
    if len(data) < 14 or data[:4] != b"MThd":
        raise MidiError(path, "no MThd header")
    hlen = int.from_bytes(data[4:8], "big")
    if hlen < 6 or 8 + hlen > len(data):
        raise MidiError(path, f"MThd header of {hlen} bytes")
    fmt = int.from_bytes(data[8:10], "big")
    ntracks = int.from_bytes(data[10:12], "big")
    division = int.from_bytes(data[12:14], "big")
    if division & 0x8000:
        raise MidiError(path, "SMPTE time division is not supported (ticks per beat needed)")
    if division == 0:
        raise MidiError(path, "time division of 0 ticks per beat")
    pos, events, last_tick, tracks = 8 + hlen, 0, 0, 0
    size = len(data)
    while pos + 8 <= size:
        cid = data[pos:pos + 4]
        clen = int.from_bytes(data[pos + 4:pos + 8], "big")
        start, end = pos + 8, pos + 8 + clen
        if end > size:
            raise MidiError(path, f"chunk {cid!r} at byte {pos} runs {end - size} bytes past "
                                  "the end of the file")
        pos = end
        if cid != b"MTrk":
            continue
        tracks += 1
        tick, status, p = 0, 0, start
        while p < end:
            got = _vlq(data, p, end)
            if got is None:
                raise MidiError(path, f"bad delta time at byte {p}")
            delta, p = got
            tick += delta
            if tick > limits.max_midi_ticks:
                raise MidiLimitError(path, f"track {tracks - 1} reaches tick {tick} > "
                                           f"{limits.max_midi_ticks}", "max_midi_ticks")
            if p >= end:
                raise MidiError(path, f"event cut at byte {p}")
            b = data[p]
            if b == 0xFF:  # meta: type, length, data
                got = _vlq(data, p + 2, end)
                if p + 2 > end or got is None:
                    raise MidiError(path, f"meta event cut at byte {p}")
                n, p = got
            elif b in (0xF0, 0xF7):  # sysex: length, data
                got = _vlq(data, p + 1, end)
                if got is None:
                    raise MidiError(path, f"sysex event cut at byte {p}")
                n, p = got
            elif b & 0x80:
                if b >> 4 == 0xF:
                    raise MidiError(path, f"status byte {b:#04x} at byte {p} is not allowed "
                                          "in a MIDI file")
                status = b
                n, p = _DATA_BYTES[b >> 4], p + 1
            else:  # running status
                if not status:
                    raise MidiError(path, f"running status without a status byte at byte {p}")
                n = _DATA_BYTES[status >> 4]
            p += n
            if p > end:
                raise MidiError(path, f"event runs past the end of its track ({end})")
            events += 1
            if events > limits.max_midi_events:
                raise MidiLimitError(path, f"more than {limits.max_midi_events} events",
                                     "max_midi_events")
        last_tick = max(last_tick, tick)
    if tracks == 0:
        raise MidiError(path, "no MTrk track chunk")
    if last_tick / division > limits.max_midi_beats:
        raise MidiLimitError(path, f"{last_tick} ticks at {division} per beat = "
                                   f"{last_tick / division:.0f} beats > {limits.max_midi_beats}",
                             "max_midi_beats")
    return MidiSummary(fmt, tracks, division, events, last_tick)


def _coarser(mid, summary: MidiSummary):
    """``mid`` with every tick scaled so that the last one is at most ``TABLE_TICKS``."""
    import mido

    new_res = max(MIN_RESOLUTION,
                  int(summary.resolution * TABLE_TICKS // max(summary.last_tick, 1)))
    scale = new_res / summary.resolution
    out = mido.MidiFile(type=mid.type, ticks_per_beat=new_res, charset=mid.charset)
    for track in mid.tracks:
        new, abs_old, prev_new = mido.MidiTrack(), 0, 0
        for msg in track:
            abs_old += msg.time
            abs_new = int(math.floor(abs_old * scale + 0.5))
            new.append(msg.copy(time=abs_new - prev_new))
            prev_new = abs_new
        out.tracks.append(new)
    return out


def read_midi(path, limits: Optional[InputLimits] = None):
    """A ``pretty_midi.PrettyMIDI`` of the file ``path``, within ``limits`` (module docstring).

    Raises:
        MidiError: missing, not a regular file, malformed, or refused by mido/pretty_midi.
        MidiLimitError: outside ``limits`` (bytes, events, ticks, beats).
    """
    import mido
    import pretty_midi

    limits = limits or InputLimits()
    path = str(path)
    try:
        data = read_bounded(path, limits.max_midi_bytes, "max_midi_bytes", "MIDI file")
    except FileLimitError as exc:
        raise MidiLimitError(path, exc.detail, exc.limit) from None
    except InputFileError as exc:
        raise MidiError(path, exc.detail) from None
    summary = scan_midi(data, path, limits)
    try:
        mid = mido.MidiFile(file=io.BytesIO(data))
        if summary.last_tick > TABLE_TICKS:
            mid = _coarser(mid, summary)
        return pretty_midi.PrettyMIDI(mido_object=mid)
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:  # mido and pretty_midi raise many types on malformed data
        raise MidiError(path, f"{type(exc).__name__}: {exc}") from None
