"""Symbolic per-frame features from a real MIDI file."""
from __future__ import annotations

import numpy as np
import pytest

from mmengine.features.symbolic import SYMBOLIC_DIM, symbolic_features

pretty_midi = pytest.importorskip("pretty_midi")


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
    sr, hop = 22050, 512
    f = symbolic_features(path, 100, sr=sr, hop=hop)
    assert f.shape == (SYMBOLIC_DIM, 100)
    fr = lambda t: int(np.floor(t * sr / hop + 0.5))  # noqa: E731
    assert f[0, fr(0.25)] == 1 and f[4, fr(0.25)] == 0
    assert f[4, fr(1.25)] == 1 and f[7, fr(1.25)] == 1 and f[0, fr(1.25)] == 0
    assert f[12, fr(1.0)] == pytest.approx(0.5)  # two onsets
    assert f[13, fr(1.25)] == pytest.approx(2 / 8)
    assert f[14, fr(1.25)] == pytest.approx(((64 + 67) / 2 - 60) / 24)
    assert np.all(f[:, fr(3.0):] == 0)  # silence, and no meter information anywhere
