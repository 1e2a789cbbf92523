"""DALI front end (CPU operators here; GPU when present) against the reference front end."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from mmengine.config import FrontendConfig
from mmengine.features.reference import compute_features

pytest.importorskip("nvidia.dali")
from mmengine.features.dali import DaliFrontend  # noqa: E402

SR = 22050


def _signals(rng):
    t = np.arange(2 * SR) / SR
    return [
        (0.1 * rng.standard_normal(t.size)).astype(np.float32),
        (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32),
        (0.3 * np.sin(2 * np.pi * (100.0 + 2000.0 * t) * t)).astype(np.float32),
    ]


def _check(out, y, cfg, what):
    ref = compute_features(y.astype(np.float64), cfg, dtype=np.float64)
    assert out["logmel"].shape == ref["logmel"].shape == (cfg.n_mels, cfg.n_frames(y.size))
    assert out["mfcc"].shape == ref["mfcc"].shape
    d = np.abs(out["logmel"] - ref["logmel"])
    # float32 FFT noise sits ~140 dB under the peak: compare bins within 100 dB of it.
    # measured: <= 7e-5 dB on noise, <= 2e-3 dB on tones/chirps in that range, all frames
    # (edge frames included: zero padding pinned); median 4e-6 dB.
    above = ref["logmel"] > ref["logmel"].max() - 100.0
    assert d[above].max() <= 0.01, f"{what}: log-Mel max |diff| {d[above].max():.3g} dB"
    assert np.median(d) <= 1e-3, f"{what}: median |diff| {np.median(d):.3g} dB"
    if d.max() <= 0.01:  # broadband signal: every bin is well above float32 noise
        dm = np.abs(out["mfcc"] - ref["mfcc"]).max()
        assert dm <= 0.01, f"{what}: MFCC max |diff| {dm:.3g}"


@pytest.mark.parametrize("variant", [{}, {"mel_scale": "htk", "mel_norm": None, "n_mels": 40}])
def test_dali_cpu_from_arrays_matches_reference(rng, variant):
    cfg = FrontendConfig(**variant)
    ys = _signals(rng)
    outs = DaliFrontend(cfg, batch_size=2).from_arrays(ys)  # 3 clips: a partial last batch
    assert len(outs) == 3
    for i, (y, o) in enumerate(zip(ys, outs)):
        _check(o, y, cfg, f"signal {i}")


def test_dali_cpu_from_files_decodes_resamples_and_downmixes(rng, tmp_path):
    cfg = FrontendConfig()
    y = _signals(rng)[0]
    sf.write(tmp_path / "a.flac", y, SR, subtype="PCM_24")
    sf.write(tmp_path / "b.wav", np.stack([y, y], axis=1), SR, subtype="FLOAT")
    outs = DaliFrontend(cfg, batch_size=4).from_files([tmp_path / "a.flac", tmp_path / "b.wav"])
    _check(outs[0], y, cfg, "flac")
    _check(outs[1], y, cfg, "stereo wav")


def test_dali_gpu_unavailable_is_a_clear_error():
    from mmengine._ext import cuda_available
    from mmengine.errors import BackendUnavailableError

    if cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        DaliFrontend(FrontendConfig(), device="gpu")


@pytest.mark.gpu
def test_dali_gpu_matches_reference(rng):
    cfg = FrontendConfig()
    ys = _signals(rng)
    for i, (y, o) in enumerate(zip(ys, DaliFrontend(cfg, device="gpu").from_arrays(ys))):
        _check(o, y, cfg, f"gpu signal {i}")
