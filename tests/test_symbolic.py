"""Symbolic per-frame features from real MIDI files (pretty_midi, music21, the corpus renderer)."""
from __future__ import annotations

import mido
import numpy as np
import pytest

from mmengine.features.symbolic import SYMBOLIC_DIM, symbolic_dim, symbolic_features

pretty_midi = pytest.importorskip("pretty_midi")

SR, HOP = 22050, 512


def fr(t: float) -> int:
    return int(np.floor(t * SR / HOP + 0.5))


def test_pitch_classes_and_onsets_land_on_the_right_frames(tmp_path):
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(velocity=90, pitch=60, start=0.0, end=0.5),   # C
                  pretty_midi.Note(velocity=90, pitch=64, start=1.0, end=1.5),   # E
                  pretty_midi.Note(velocity=90, pitch=67, start=1.0, end=2.0)]   # G
    pm.instruments.append(inst)
    pm.time_signature_changes = [pretty_midi.TimeSignature(6, 8, 0.0)]
    path = tmp_path / "x.mid"
    pm.write(str(path))
    f = symbolic_features(path, 100, sr=SR, hop=HOP)
    assert f.shape == (SYMBOLIC_DIM, 100) == (symbolic_dim(), 100) and f.dtype == np.float32
    assert f[0, fr(0.25)] == 1 and f[4, fr(0.25)] == 0
    assert f[4, fr(1.25)] == 1 and f[7, fr(1.25)] == 1 and f[0, fr(1.25)] == 0
    assert f[12, fr(1.0)] == pytest.approx(0.5)  # two onsets
    assert f[12, fr(1.0) + 1] == 0 and f[12, fr(0.0)] == pytest.approx(0.25)
    assert f[13, fr(1.25)] == pytest.approx(2 / 8)
    assert f[14, fr(1.25)] == pytest.approx(((64 + 67) / 2 - 60) / 24)
    assert np.all(f[:18, fr(2.0) + 1:] == 0)  # silence after the last note
    assert np.all(f[18:] == 0)  # fewer than 3 onsets: no meter profile


def test_meter_is_not_encoded(tmp_path):
    """The same notes under 6/8 or 2/4 (and another tempo map) give the same features."""
    feats = []
    for num, den, bpm in ((6, 8, 90.0), (2, 4, 140.0)):
        pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
        inst = pretty_midi.Instrument(program=40)
        inst.notes = [pretty_midi.Note(velocity=80, pitch=62 + k % 5, start=0.3 * k,
                                       end=0.3 * k + 0.25) for k in range(12)]
        pm.instruments.append(inst)
        pm.time_signature_changes = [pretty_midi.TimeSignature(num, den, 0.0)]
        path = tmp_path / f"{num}-{den}.mid"
        pm.write(str(path))
        feats.append(symbolic_features(path, 200, sr=SR, hop=HOP))
    np.testing.assert_array_equal(feats[0], feats[1])


def test_reads_long_music21_midi_beyond_pretty_midis_tick_limit(tmp_path):
    """music21 writes 10,080 ticks per quarter: a note after 1,000 quarters is > 1e7 ticks."""
    music21 = pytest.importorskip("music21")
    s = music21.stream.Stream()
    s.insert(0, music21.tempo.MetronomeMark(number=120))
    s.insert(0, music21.note.Note("D4", quarterLength=1))
    s.insert(1000, music21.note.Note("A4", quarterLength=1))
    path = tmp_path / "long.mid"
    s.write("midi", fp=str(path))
    assert mido.MidiFile(str(path)).ticks_per_beat == 10080
    f = symbolic_features(path, fr(501.0), sr=SR, hop=HOP)
    assert f[2, fr(0.25)] == 1 and f[9, fr(500.25)] == 1  # D at 0 s, A at 500 s (120 bpm)


def test_corpus_midi_is_aligned_with_its_audio(tmp_path):
    """Onsets of the renderer's MIDI file fall on the frames where the audio attacks."""
    pytest.importorskip("tinysoundfont")
    from mmengine.data.corpus import render

    starts = np.array([0.5, 1.25, 2.0, 2.6])
    ends = starts + 0.3
    pitch = np.array([60, 67, 64, 72])
    y = render.synthesize(starts, ends, pitch, program=0, sample_rate=SR, seconds=3.0)
    path = tmp_path / "r.mid"
    render.write_midi(path, starts, ends, pitch, program=0)
    assert not any(m.type in {"time_signature", "key_signature"}
                   for m in mido.MidiFile(str(path)).tracks[0])
    n = 1 + len(y) // HOP
    f = symbolic_features(path, n, sr=SR, hop=HOP)
    onset_frames = np.flatnonzero(f[12])
    assert list(onset_frames) == [fr(t) for t in starts]
    frames = np.pad(y, HOP // 2)[: n * HOP].reshape(n, HOP)
    energy = np.sqrt(np.mean(frames ** 2, axis=1))
    for t in onset_frames:  # the audio is (near) silent before, loud after
        assert energy[t + 2] > 4 * energy[t - 2] + 1e-6, (t, energy[t - 2: t + 3])


def test_relative_rows_are_tempo_and_transposition_free():
    """Rows 15–17 (inter-onset interval over the median, ratio of successive intervals,
    melodic step) do not change when the piece is played faster or transposed, and read a
    dotted (3:1) rhythm and the steps of the melody."""
    from mmengine.features.symbolic import notes_features

    durs = np.tile([0.3, 0.1], 8)  # dotted: long-short
    steps = np.tile([2, -1, 3, -4], 4)
    pitch = 60 + np.concatenate([[0], np.cumsum(steps[:-1])])

    def rows(scale, transpose):
        starts = np.concatenate([[0.0], np.cumsum(durs[:-1])]) * scale + 0.2
        f = notes_features(starts, starts + 0.05, pitch + transpose, 400, sr=SR, hop=HOP)
        on = np.flatnonzero(f[12])
        return f[15:18, on]

    a = rows(1.0, 0)
    np.testing.assert_allclose(a, rows(0.8, 7), atol=0.02)  # ±1 frame of rounding
    # 8 long and 7 short intervals: the median is the long one (0.3 s); short = 1/3 of it
    np.testing.assert_allclose(a[0, :4] * 3, np.log2([1, 1 / 3, 1, 1 / 3]), atol=1e-6)
    np.testing.assert_allclose(a[1, 1:4] * 3, np.log2([1 / 3, 3, 1 / 3]), atol=1e-6)
    np.testing.assert_allclose(a[2, 1:5] * 12, steps[:4], atol=1e-6)
    assert a[2, 0] == 0


def test_engines_read_the_rows_their_model_has(tmp_path):
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(velocity=90, pitch=60 + k, start=0.2 * k, end=0.2 * k + 0.1)
                  for k in range(6)]
    pm.instruments.append(inst)
    path = tmp_path / "x.mid"
    pm.write(str(path))
    full = symbolic_features(path, 80, sr=SR, hop=HOP)
    np.testing.assert_array_equal(symbolic_features(path, 80, sr=SR, hop=HOP, rows=15),
                                  full[:15])
    with pytest.raises(ValueError):
        symbolic_features(path, 80, sr=SR, hop=HOP, rows=SYMBOLIC_DIM + 1)


def _tune(bar_steps: int, bars: int, seed: int = 0, u: float = 0.18):
    """A melody of ``bars`` repeats of a random ``bar_steps``-note bar (no two neighbours
    equal), one note per grid step of ``u`` seconds."""
    rng = np.random.default_rng(seed)
    bar = [60]
    while len(bar) < bar_steps:
        p = 60 + int(rng.integers(0, 12))
        if p != bar[-1]:
            bar.append(p)
    pitch = np.tile(bar, bars)
    starts = np.arange(len(pitch)) * u
    return starts, pitch


def test_meter_profile_reads_the_bar():
    """A jig-like tune (6 steps to the bar) and a slip-jig-like one (9): the melodic
    self-similarity is 1 at the bar lag and its multiples and low elsewhere."""
    from mmengine.features.symbolic import METER_LAGS, meter_profile

    for steps in (6, 8, 9):
        prof = meter_profile(*_tune(steps, 12))
        P, O = prof[:METER_LAGS], prof[METER_LAGS:]
        lags = np.arange(1, METER_LAGS + 1)
        assert set(lags[P > 0.99]) == set(lags[lags % steps == 0]), (steps, np.round(P, 2))
        assert P[lags % steps != 0].max() < 0.5
        np.testing.assert_allclose(O, 1.0)  # an onset on every step


def test_meter_profile_is_tempo_transposition_and_offset_free():
    from mmengine.features.symbolic import meter_profile

    starts, pitch = _tune(9, 10, seed=3)
    ref = meter_profile(starts, pitch)
    np.testing.assert_array_equal(ref, meter_profile(starts * 0.75 + 2.5, pitch + 7))
    # a chord counts once, by its highest note
    chord_s = np.concatenate([starts, starts[::9] + 0.005])
    chord_p = np.concatenate([pitch, pitch[::9] - 12])
    np.testing.assert_array_equal(ref, meter_profile(chord_s, chord_p))


def test_meter_profile_rhythm_and_edges():
    from mmengine.features.symbolic import MAX_GRID, METER_LAGS, meter_profile

    # short, short, long (0.1, 0.1, 0.2 s): the grid step is the median 0.1 s and the
    # onsets fall on steps 0, 1, 2, 4, 5, 6, 8, ... (every step but 3 mod 4)
    iois = np.tile([0.1, 0.1, 0.2], 20)
    starts = np.concatenate([[0.0], np.cumsum(iois)])
    O = meter_profile(starts, np.full(len(starts), 60))[METER_LAGS:]
    # onsets at steps = 0, 1, 2 (mod 4): lag 4 always lands on an onset, lag 3 on 2 of 3
    assert O[3] == pytest.approx(1.0) and O[2] == pytest.approx(2 / 3, abs=0.02)
    assert not meter_profile([0.0, 0.5], [60, 62]).any()  # fewer than 3 onsets
    assert not meter_profile([0.0, 0.001, 0.002], [60, 62, 64]).any()  # one chord
    assert not meter_profile([], []).any()
    # a tiny median interval and a note far away: the grid is floored and capped
    far = np.concatenate([np.arange(50) * 0.001 + np.arange(50) * 0.03, [5000.0]])
    prof = meter_profile(far, np.arange(len(far)) % 12 + 60)
    assert prof.shape == (2 * METER_LAGS,) and np.isfinite(prof).all()
    assert MAX_GRID * 0.031 < 5000.0  # the far note lies beyond the cap and is dropped


def test_meter_rows_repeat_the_profile_of_the_notes_in_the_frames():
    from mmengine.features.symbolic import METER_START, meter_profile, notes_features

    starts, pitch = _tune(6, 30)  # 180 notes, 32.4 s
    n = 1000  # 23.2 s of frames
    f = notes_features(starts, starts + 0.1, pitch, n, sr=SR, hop=HOP)
    inside = np.floor(starts * SR / HOP + 0.5) < n
    np.testing.assert_array_equal(f[METER_START:], np.repeat(
        meter_profile(starts[inside], pitch[inside])[:, None], n, axis=1))
    assert f[METER_START:].any()


def test_windows_of_a_long_input_get_their_own_meter_profile(tmp_path):
    """An engine cuts a long input into windows: rows 0–17 are the windows' frames of the
    whole file's features, the meter rows each window's own profile (a jig bar in the first
    half of the file, a slip-jig bar in the second), and the last window wraps around."""
    from mmengine.features.symbolic import METER_START, meter_profile, symbolic_windows

    s6, p6 = _tune(6, 20)            # 120 notes, 21.6 s
    s9, p9 = _tune(9, 14, seed=1)    # 126 notes, 22.7 s
    starts = np.concatenate([s6, s9 + 21.6])
    pitch = np.concatenate([p6, p9])
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(velocity=90, pitch=int(p), start=float(s), end=float(s) + 0.1)
                  for s, p in zip(starts, pitch)]
    pm.instruments.append(inst)
    path = tmp_path / "long.mid"
    pm.write(str(path))
    total, T = fr(44.5), fr(21.6)
    first = [0, fr(21.6), fr(40.0)]
    win = symbolic_windows(path, total, first, T, sr=SR, hop=HOP)
    full = symbolic_features(path, total, sr=SR, hop=HOP)
    for w, a in enumerate(first):
        np.testing.assert_array_equal(win[w, :METER_START],
                                      full[:METER_START, (a + np.arange(T)) % total])
    # the notes as the file stores them (tick-rounded times)
    note_s = np.asarray([n.start for n in pretty_midi.PrettyMIDI(str(path)).instruments[0].notes])
    note_p = np.asarray([n.pitch for n in pretty_midi.PrettyMIDI(str(path)).instruments[0].notes])
    note_f = np.floor(note_s * SR / HOP + 0.5)
    for w, a in enumerate(first):
        mine = ((note_f - a) % total < T) & (note_f < total)
        np.testing.assert_allclose(win[w, METER_START:, 0],
                                   meter_profile(note_s[mine], note_p[mine]), atol=1e-6)
        assert np.all(win[w, METER_START:] == win[w, METER_START:, :1])
    lag = np.arange(1, 25)
    P0, P1 = win[0, METER_START:METER_START + 24, 0], win[1, METER_START:METER_START + 24, 0]
    assert set(lag[P0 > 0.95]) == {6, 12, 18, 24} and set(lag[P1 > 0.95]) == {9, 18}
    assert win.shape == (3, 66, T) and win.dtype == np.float32
