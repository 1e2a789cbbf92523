"""Bounded memory for any input list (issue 15): ``Engine.classify``'s peak RSS is set by
``workers`` and ``batch_size``, not by how many long files the list holds.

Each run is a fresh process classifying the same 10-minute FLAC file listed N times (each
entry decoded on its own) with the default front end (22050 Hz, 30 s windows: one decoded file
is 53 MB of float32, its 20 windows' features 15 MB) and 2 decoding threads. Holding every
decoded waveform until its windows are classified, as the engine did before, grows the peak by
about 65 MB per extra file (measured: 206, 467 and 858 MB for 2, 6 and 12 files); the
engine now keeps only each item's features and lets at most ``2 * workers`` items (or a
batch's worth of windows) wait: measured 217-247 MB for 8 files and 236-299 MB for 24 over
repeated runs on a loaded 2-core machine (how many finished items wait depends on timing), so
24 files must peak within two decoded waveforms of 8 (the previous engine: +1 GB).
"""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from hostile_inputs import measure
from mmengine.config import ModelConfig
from mmengine.export import build_engine_from_model
from mmengine.models import build_model

SR = 22050
LONG_S = 600
#: one decoded long file, float32
WAVEFORM_MB = LONG_S * SR * 4 / 2 ** 20


@pytest.fixture(scope="module")
def long_case(tmp_path_factory):
    d = tmp_path_factory.mktemp("long")
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=16, mfcc_channels=8, mel_channels=16, dilations=(1, 2),
                      flux_bands=4, modalities=("mfcc", "mel"))
    m = build_model(cfg, dict(n_mfcc=20, n_mels=128, text_dim=0, symbolic_dim=0, n_classes=3,
                              multilabel=False)).eval()
    engine = build_engine_from_model(m, d / "e.mme", backend="native", labels=["a", "b", "c"])
    t = np.arange(SR * 60) / SR
    with sf.SoundFile(str(d / "long.flac"), "w", samplerate=SR, channels=1, format="FLAC",
                      subtype="PCM_16") as f:
        for k in range(LONG_S // 60):  # a minute at a time
            f.write((0.3 * np.sin(2 * np.pi * (220 + 20 * k) * t)).astype(np.float32))
    return engine, d / "long.flac"


def _peak(engine, path, n: int) -> float:
    r = measure("res = eng.classify([args['path']] * args['n'], workers=2, batch_size=32)\n"
                "assert len(res) == args['n'] and all(x.ok for x in res), res",
                "from mmengine.runtime import Engine\neng = Engine.load(args['engine'])",
                timeout=600, engine=str(engine), path=str(path), n=n)
    assert r["error"] is None, r
    return r["peak_rss_mb"]


def test_peak_rss_does_not_grow_with_the_number_of_long_files(long_case):
    engine, path = long_case
    few, many = _peak(engine, path, 8), _peak(engine, path, 24)
    print(f"peak RSS: 8 files {few:.0f} MB, 24 files {many:.0f} MB")
    assert many - few < 2 * WAVEFORM_MB, (
        f"peak RSS {few:.0f} MB for 8 long files, {many:.0f} MB for 24: it grows with the "
        f"list (one decoded file is {WAVEFORM_MB:.0f} MB)")


@pytest.mark.parametrize("fmt,subtype", [("flac", "PCM_16"), ("flac", "PCM_24"),
                                         ("wav", "PCM_16"), ("wav", "FLOAT"), ("ogg", "VORBIS")])
@pytest.mark.parametrize("channels", [1, 2, 3, 8])
@pytest.mark.parametrize("native", [True, False], ids=["native", "libsndfile"])
def test_channels_mixed_while_decoding_equal_mixing_after(tmp_path, monkeypatch, fmt, subtype,
                                                          channels, native, rng):
    """``decode(mono=True)`` (one block or FLAC frame of every channel held at a time) is
    bit-identical to ``to_mono`` of the full decode, on both decoders."""
    import mmengine._ext as ext
    from mmengine.data.audio import decode, to_mono

    if not native:
        monkeypatch.setattr(ext, "native", lambda: None)
    x = (0.3 * rng.standard_normal((30011, channels))).clip(-1, 1).astype(np.float32)
    path = tmp_path / f"x.{fmt}"
    sf.write(str(path), x, 44100, subtype=subtype)
    full, sr = decode(path)
    mixed, sr2 = decode(path, mono=True)
    assert sr == sr2 and mixed.shape == (len(full), 1)
    np.testing.assert_array_equal(mixed[:, 0], to_mono(full))


def test_decoding_budget_never_deadlocks(tmp_path):
    """Threads wait for the caller to take finished windows before they start another file,
    except for the item the caller waits for: long and short files mixed, tiny batches and
    more threads than batch never hang (a fresh process with a timeout)."""
    from audio_fixtures import write_noise, write_tone

    from mmengine.config import AudioConfig, FrontendConfig

    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=8, mfcc_channels=4, mel_channels=8, dilations=(1,),
                      flux_bands=2, modalities=("mfcc", "mel"))
    m = build_model(cfg, dict(n_mfcc=8, n_mels=16, text_dim=0, symbolic_dim=0, n_classes=2,
                              multilabel=False)).eval()
    engine = build_engine_from_model(
        m, tmp_path / "e.mme", backend="native", labels=["a", "b"],
        audio_cfg=AudioConfig(sample_rate=8000, clip_seconds=0.25),
        frontend_cfg=FrontendConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=16,
                                    n_mfcc=8))
    short = write_tone(tmp_path / "s.wav", sr=8000, seconds=0.2)
    long = write_noise(tmp_path / "l.flac", sr=8000, seconds=2.0)
    files = [str(long if k % 3 == 0 else short) for k in range(60)] + [str(tmp_path / "nope")]
    r = measure("for bs, w in ((1, 4), (2, 3), (3, 2), (32, 4)):\n"
                "    for fe in ('native', 'reference'):\n"
                "        eng = Engine.load(args['engine'], frontend=fe)\n"
                "        res = eng.classify(args['files'], batch_size=bs, workers=w)\n"
                "        assert sum(x.ok for x in res) == len(res) - 1, res",
                "from mmengine.runtime import Engine", timeout=240, engine=str(engine),
                files=files)
    assert r["error"] is None, r
