"""Score -> notes -> audio, with the leak fixes of DATA-NOTES.md.

* Notes come from music21 (``expandRepeats``, else the fallbacks: strip repeat signs and
  expand, or play as written; an expansion that loses notes counts as failed), ties merged,
  times in quarter notes. No meter or barline information is kept.
* Tempo is set per *beat of the meter* (dotted quarter in compound meters, half note in C, C|,
  2/2 and 4/4, the notated beat otherwise) from one range for every class.
* Transposition at the note level (never the key signature, which music21 can fail on).
* One instrument pool for every class; the tune is looped back to back (never padded with
  silence) to the clip length, rendered with tinysoundfont and the General MIDI soundfont of
  pretty_midi, RMS-normalised, then made peak-safe.
* The MIDI file written next to the audio holds exactly the key presses the synthesiser
  played (looped, transposed; unisons merged), 960 ticks per quarter at 120 bpm, one program,
  no time signature or key events: the symbolic modality is aligned with the audio frame by
  frame. It is written with mido from the note list rather than exported by music21, whose
  MIDI export fails or drops notes on some expanded scores (DATA-NOTES.md).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np

#: General MIDI programs shared by every class (fiddle, flute, accordion, piano, nylon
#: guitar, pan flute, clarinet, harmonica, strings)
FOLK_PROGRAMS = (40, 73, 21, 0, 24, 75, 71, 22, 48)
VOCAL_PROGRAMS = (52, 19, 48, 0, 71, 73, 68)
BEAT_BPM = (90.0, 130.0)
VOCAL_BEAT_BPM = (60.0, 96.0)
TRANSPOSE = (-5, 6)  # semitones, upper bound exclusive
TARGET_DBFS = -20.0
#: bump when the audio or MIDI of a job changes, so that builds render again
RENDER_VERSION = 1
VELOCITY = 90
MIDI_TPQ = 960


class RenderError(Exception):
    """A piece could not be turned into audio (after every fallback)."""


@dataclass
class Notes:
    """Notes of a piece, each array ``(n,)``: start and end in quarter notes, MIDI pitch;
    ``length_q`` the piece's length in quarters (one pass), ``fallback`` how repeats were
    handled (``""`` = expanded)."""

    start: np.ndarray
    end: np.ndarray
    pitch: np.ndarray
    length_q: float
    fallback: str = ""


def soundfont_path() -> Path:
    """The General MIDI soundfont shipped inside the pretty_midi package."""
    import pretty_midi

    return Path(pretty_midi.__file__).resolve().parent / "TimGM6mb.sf2"


def beat_quarters(meter: str) -> float:
    """Quarter notes per beat of an ABC meter string (``M:`` field)."""
    m = meter.strip()
    if m in {"C|", "C", "2/2", "4/4"}:
        return 2.0
    mm = re.match(r"(\d+)/(\d+)", m)
    if mm:
        num, den = int(mm.group(1)), int(mm.group(2))
        if den == 8 and num % 3 == 0:
            return 1.5
        return 4.0 / den
    return 1.0


def _collect(score) -> Tuple[list, float]:
    from music21 import note as m21note

    flat = score.stripTies().flatten()
    events = []
    for n in flat.notes:
        q = float(n.quarterLength)
        if q <= 0 or isinstance(n, m21note.Unpitched):
            continue
        start = float(n.offset)
        pitches = [p.midi for p in n.pitches]
        events.extend((start, start + q, p) for p in pitches)
    length = float(flat.highestTime)
    return events, length


def score_notes(score) -> Notes:
    """Notes of a parsed score with repeats expanded (fallbacks recorded in ``.fallback``).

    An expansion with fewer notes than the score as written has lost some (music21 does that
    on a few malformed repeat structures): it counts as a failure and the next fallback runs.
    """
    from music21 import bar, repeat

    written, _ = _collect(score)
    attempts = []
    for how in ("expand", "strip-repeats", "as-written"):
        try:
            s = score
            if how == "expand":
                s = score.expandRepeats() if hasattr(score, "expandRepeats") else score
            elif how == "strip-repeats":
                s = score.__deepcopy__()
                for el in list(s.recurse().getElementsByClass((repeat.RepeatMark, bar.Repeat))):
                    el.activeSite.remove(el)
                s = s.expandRepeats()
            events, length = _collect(s)
            if not events or length <= 0:
                raise RenderError("no notes")
            if len(events) < len(written):
                raise RenderError(f"{len(events)} notes after expansion, {len(written)} written")
            ev = np.array(events, dtype=np.float64)
            return Notes(ev[:, 0], ev[:, 1], ev[:, 2].astype(np.int64), length,
                         "" if how == "expand" else how)
        except Exception as exc:  # noqa: BLE001 - every failure goes to the next fallback
            attempts.append(f"{how}: {type(exc).__name__}: {exc}")
    raise RenderError("; ".join(attempts))


def loop_notes(n: Notes, sec_per_q: float, seconds: float,
               start_q: float = 0.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Repeat the piece back to back until ``seconds`` are covered.

    ``start_q`` (quarters into one pass, ``0 <= start_q < n.length_q``): the clip starts there
    instead of at the beginning (the notes starting before it in the first pass are left
    out, the loop goes on from there; ``draw_loop_start`` picks a note onset). At 0 every
    shift below is exact, so clips that start at the beginning keep their bytes.

    Returns (start s, end s, pitch), each ``(m,)``: every note starting before ``seconds``.
    """
    if not 0.0 <= start_q < n.length_q:
        raise ValueError(f"loop start {start_q} quarters is outside the piece "
                         f"(0 <= start < {n.length_q})")
    period = n.length_q * sec_per_q
    offset = float(start_q) * sec_per_q
    reps = int(np.ceil((seconds + offset) / period)) + 1
    starts = np.concatenate([n.start * sec_per_q + k * period for k in range(reps)]) - offset
    ends = np.concatenate([n.end * sec_per_q + k * period for k in range(reps)]) - offset
    pitch = np.tile(n.pitch, reps)
    keep = (starts > -1e-9) & (starts < seconds)
    return (np.maximum(starts[keep], 0.0), np.minimum(ends[keep], seconds + 1.0),
            pitch[keep])


def draw_loop_start(rng: np.random.Generator, n: Notes) -> float:
    """A random loop start for a clip: one of the piece's distinct note onsets after its
    beginning (quarters), drawn uniformly; 0 when the piece has no other onset."""
    onsets = np.unique(n.start[(n.start > 0) & (n.start < n.length_q)])
    if onsets.size == 0:
        return 0.0
    return float(onsets[int(rng.integers(onsets.size))])


def key_events(starts, ends, pitch, rate: float) -> List[Tuple[int, int, int]]:
    """Key presses ``(time in 1/rate s, 1 = on / 0 = off, pitch)`` in time order.

    Voices in unison share one key: a key goes down when its first note starts and up when
    its last note ends (the synthesiser and the MIDI file both play exactly these events).
    At one instant, releases come before presses, so a repeated note is struck again.
    """
    raw = sorted([(int(round(e * rate)), 0, int(p)) for e, p in zip(ends, pitch)]
                 + [(int(round(s * rate)), 1, int(p)) for s, p in zip(starts, pitch)])
    down = np.zeros(128, np.int64)
    out = []
    for t, on, p in raw:
        if on:
            if down[p] == 0:
                out.append((t, 1, p))
            down[p] += 1
        elif down[p] > 0:
            down[p] -= 1
            if down[p] == 0:
                out.append((t, 0, p))
    return out


def synthesize(starts, ends, pitch, *, program: int, sample_rate: int, seconds: float,
               velocity: int = VELOCITY) -> np.ndarray:
    """Render notes (seconds, seconds, MIDI pitch; each ``(n,)``) with tinysoundfont.

    Returns float32 mono ``(round(seconds * sample_rate),)``, the mean of the two channels.
    """
    import tinysoundfont

    total = int(round(seconds * sample_rate))
    synth = tinysoundfont.Synth(samplerate=sample_rate)
    sfid = synth.sfload(str(soundfont_path()))
    synth.program_select(0, sfid, 0, int(program))
    out = np.zeros((total, 2), np.float32)
    pos = 0
    for t, on, p in key_events(starts, ends, pitch, sample_rate):
        t = min(t, total)
        if t > pos:
            out[pos:t] = np.frombuffer(synth.generate(t - pos), np.float32).reshape(-1, 2)
            pos = t
        if pos >= total:
            break
        if on:
            synth.noteon(0, p, velocity)
        else:
            synth.noteoff(0, p)
    if pos < total:
        out[pos:] = np.frombuffer(synth.generate(total - pos), np.float32).reshape(-1, 2)
    return out.mean(axis=1)


def normalise_rms(y: np.ndarray, dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Scale to the target RMS level, then down (never clipping) if the peak exceeds 1."""
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    if rms <= 0:
        raise RenderError("rendered audio is silent")
    y = y * (10 ** (dbfs / 20.0) / rms)
    peak = float(np.abs(y).max())
    if peak > 0.999:
        y = y * (0.999 / peak)
    return y.astype(np.float32)


def write_midi(path: Path, starts, ends, pitch, *, program: int) -> None:
    """The rendered notes as a type-0 MIDI file: one tempo event (120 bpm, so that ticks map
    to seconds), one program change, the key events of ``key_events``; no time signature,
    key signature or any other meter information."""
    import mido

    ticks_per_s = MIDI_TPQ * 2.0  # 120 quarter notes per minute
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000, time=0),
                            mido.Message("program_change", program=int(program), time=0)])
    now = 0
    for t, on, p in key_events(starts, ends, pitch, ticks_per_s):
        track.append(mido.Message("note_on" if on else "note_off", note=p,
                                  velocity=VELOCITY if on else 0, time=t - now))
        now = t
    track.append(mido.MetaMessage("end_of_track", time=0))
    mid = mido.MidiFile(type=0, ticks_per_beat=MIDI_TPQ)
    mid.tracks.append(track)
    mid.save(str(path))


def settings_for(rng: np.random.Generator, programs, bpm_range) -> dict:
    """Random render settings from the shared pools."""
    return {"program": int(rng.choice(programs)),
            "transpose": int(rng.integers(*TRANSPOSE)),
            "tempo_bpm": float(np.round(rng.uniform(*bpm_range), 2))}


def seconds_per_quarter(beat_q: float, bpm: float) -> float:
    """Seconds per quarter note when the beat (``beat_q`` quarters) runs at ``bpm``."""
    return 60.0 / (bpm * beat_q)


def render_notes(notes: Notes, *, beat_q: float, settings: dict, sample_rate: int,
                 seconds: float, loop_start_q: float = 0.0) -> Tuple[np.ndarray, tuple]:
    """Notes -> (RMS-normalised clip ``(seconds * sample_rate,)`` float32, the looped and
    transposed notes (start s, end s, pitch) that it plays). ``loop_start_q``: where in the
    piece (quarters) the clip starts (see ``loop_notes``)."""
    spq = seconds_per_quarter(beat_q, settings["tempo_bpm"])
    s, e, p = loop_notes(notes, spq, seconds, loop_start_q)
    p = np.clip(p + settings["transpose"], 0, 127)
    y = synthesize(s, e, p, program=settings["program"], sample_rate=sample_rate, seconds=seconds)
    return normalise_rms(y), (s, e, p)
