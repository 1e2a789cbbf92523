"""The audio meter head (``models.streams.AudioMeterHead``): its log-lag profile against librosa
with every parameter pinned, the FFT and ONNX (gather) paths against each other, the
tempo-invariance of its template scores, and its place in the fusion model (masks, stage 2's
opening, the feature-matched baselines). The C++ graph and ONNX Runtime are compared with
torch on models with the head in ``tests/test_native_model.py`` and
``tests/test_onnx_export.py``.

librosa's calls for one clip (log-Mel ``S`` and chroma ``C`` in dB, ``(rows, T)``)::

    e = librosa.onset.onset_strength(S=S, lag=1, max_size=1, detrend=False, center=False,
                                     aggregate=np.mean)
    e = e - e.mean();  r = librosa.autocorrelate(e);  row0 = interp(r / r[0])
    c = 10 ** ((C - C.max(0)) / 10);  c = c / norm(c, axis=0)
    s = librosa.autocorrelate(c, axis=1).sum(0) / (T - arange(T));  row1 = standardise(interp(s))

``interp`` reads a lag curve at ``config.log_lag_weights``' log-spaced lags (``np.interp``).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmengine.config import (AUDIO_METER_BINS, AUDIO_METER_LAGS, AUDIO_METER_SHIFTS,
                             ModelConfig, log_lag_weights, uses_chroma)
from mmengine.models import build_model
from mmengine.models import streams
from mmengine.models.streams import AudioMeterHead, audio_meter_profile, lagged_sums

librosa = pytest.importorskip("librosa")


def _positions():
    pos = np.exp(np.linspace(np.log(AUDIO_METER_LAGS[0]), np.log(AUDIO_METER_LAGS[1]),
                             AUDIO_METER_BINS))
    pos[-1] = AUDIO_METER_LAGS[1]
    return pos


def _librosa_profile(S: np.ndarray, C: np.ndarray) -> np.ndarray:
    T = S.shape[1]
    e = librosa.onset.onset_strength(S=S, lag=1, max_size=1, detrend=False, center=False,
                                     aggregate=np.mean)
    e = e - e.mean()
    r = librosa.autocorrelate(e)
    pos = _positions()
    lag_axis = np.arange(T)
    row0 = np.interp(pos, lag_axis, r / r[0])  # T > the longest lag: no clamping
    c = 10.0 ** ((C - C.max(axis=0)) / 10.0)
    c = c / np.sqrt((c * c).sum(axis=0) + 1e-12)
    s = librosa.autocorrelate(c, axis=1).sum(axis=0) / (T - np.arange(T))
    row1 = np.interp(pos, lag_axis, s)
    row1 = row1 - row1.mean()
    row1 = row1 / np.sqrt((row1 * row1).mean() + 1e-8)
    return np.stack([row0, row1])


def _torch_profile(S: np.ndarray, C, dtype=torch.float64) -> np.ndarray:
    lags, w = log_lag_weights()
    with torch.no_grad():
        out = audio_meter_profile(torch.from_numpy(S).to(dtype)[None],
                                  None if C is None else torch.from_numpy(C).to(dtype)[None],
                                  torch.from_numpy(lags), torch.from_numpy(w).to(dtype))
    return out[0].double().numpy()


@pytest.mark.parametrize("T", [400, 1292])
def test_profile_matches_librosa(T):
    rng = np.random.default_rng(T)
    S = rng.normal(-40, 12, (32, T))
    C = rng.normal(-30, 10, (12, T))
    C[:, ::7] = -100.0  # silent frames: every class at the floor
    np.testing.assert_allclose(_torch_profile(S, C), _librosa_profile(S, C), atol=1e-9)
    # float32, as the model runs it
    np.testing.assert_allclose(_torch_profile(S.astype(np.float32), C.astype(np.float32),
                                              torch.float32), _librosa_profile(S, C), atol=2e-4)


def test_log_lag_weights_interpolate_like_numpy():
    lags, w = log_lag_weights()
    assert lags[0] == AUDIO_METER_LAGS[0] and lags[-1] == AUDIO_METER_LAGS[1]
    np.testing.assert_allclose(w.sum(axis=0), 1.0)
    curve = np.sin(np.arange(AUDIO_METER_LAGS[1] + 1) / 7.0)
    np.testing.assert_allclose(curve[lags] @ w, np.interp(_positions(), np.arange(len(curve)),
                                                          curve), atol=1e-12)


@pytest.mark.parametrize("T", [1, 3, 150, 1292])
def test_fft_and_onnx_paths_agree(T, monkeypatch):
    rng = np.random.default_rng(T)
    x = torch.from_numpy(rng.normal(0, 1, (2, 12, T)))
    lags = torch.from_numpy(log_lag_weights()[0])
    fft = lagged_sums(x, lags)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    gather = lagged_sums(x, lags)
    np.testing.assert_allclose(fft.numpy(), gather.numpy(), atol=1e-9 * max(1.0, T))
    # and both are librosa's autocorrelation summed over the rows, zero past the clip
    ref = librosa.autocorrelate(x.numpy(), axis=2).sum(axis=1)
    want = np.stack([[row[l] if l < T else 0.0 for l in lags.numpy()] for row in ref])
    np.testing.assert_allclose(gather.numpy(), want, atol=1e-9 * max(1.0, T))


def test_click_train_peaks_at_its_period():
    """An onset every 10 frames: the onset row's largest value lies at the bin nearest lag 10
    (or a multiple), and every bin near a multiple of 10 beats every bin midway between."""
    T, P = 1000, 10
    S = np.full((8, T), -60.0)
    S[:, ::P] = 0.0
    prof = _torch_profile(S, None)
    pos = _positions()
    best = pos[np.argmax(prof[0])]
    assert abs(best / P - round(best / P)) < 0.06, best
    on = [j for j, p in enumerate(pos) if abs(p / P - round(p / P)) < 0.03 and p > P / 2]
    off = [j for j, p in enumerate(pos) if abs(p / P - round(p / P) - 0.5) < 0.05]
    assert on and off and prof[0, on].min() > prof[0, off].max()
    assert np.all(prof[1] == 0)  # no chroma: the second row is zero


def test_template_scores_follow_a_tempo_change():
    """Shifting the profile by one log-lag bin (a tempo change of 8 %) moves the best template
    position by one and leaves the score unchanged."""
    torch.manual_seed(0)
    head = AudioMeterHead(3)
    W = head.width
    prof = torch.zeros(1, 2, AUDIO_METER_BINS)
    bump = torch.randn(2, 20)
    prof[0, :, 12:32] = bump
    with torch.no_grad():
        # templates that match the bump at position 3: the maximum is inside the range
        head.templates.zero_()
        head.templates[:, :, 9:29] = bump + 0.1 * torch.randn(3, 2, 20)
        a = head.scores(prof)
        b = head.scores(torch.roll(prof, 1, dims=2))
    assert AUDIO_METER_SHIFTS >= 5 and W + AUDIO_METER_SHIFTS - 1 == AUDIO_METER_BINS
    torch.testing.assert_close(a, b)


def _model(**over):
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=8, mel_channels=8, mfcc_channels=8, symbolic_channels=8,
                      dilations=(1,), **{"audio_meter_templates": 3, **over})
    return build_model(cfg, dict(n_mfcc=5, n_mels=8, text_dim=0, symbolic_dim=20,
                                 n_classes=3, multilabel=False, n_chroma=12)).eval()


def _batch(B=2, T=300):
    g = torch.Generator().manual_seed(1)
    return {"mfcc": torch.randn(B, 5, T, generator=g),
            "logmel": torch.randn(B, 8, T, generator=g) * 10 - 40,
            "chroma": torch.randn(B, 12, T, generator=g) * 10 - 30,
            "symbolic": (torch.rand(B, 20, T, generator=g) < 0.3).float(),
            "symbolic_mask": torch.ones(B, dtype=torch.bool)}


def test_head_joins_last_and_is_masked_with_the_log_mel():
    m = _model()
    assert m.audio_meter is not None and m.stream_dims()["audio_meter"] == 2 * 48 + 3
    x = _batch()
    _, late = m.encode(x)
    tail = late[:, -m.audio_meter.out_dim:]
    assert tail.abs().sum() > 0
    _, late = m.encode({**x, "mel_mask": torch.tensor([False, True])})
    assert late[0, -m.audio_meter.out_dim:].abs().sum() == 0
    assert late[1, -m.audio_meter.out_dim:].abs().sum() > 0
    _, late = m.encode({k: v for k, v in x.items() if k not in ("logmel", "chroma")})
    assert late[:, -m.audio_meter.out_dim:].abs().sum() == 0
    # without a chroma in the batch the second profile row is zero, the rest still computed
    _, late = m.encode({k: v for k, v in x.items() if k != "chroma"})
    assert late[:, -m.audio_meter.out_dim:].abs().sum() > 0


def test_head_needs_the_dilated_design_and_the_log_mel():
    dims = dict(n_mfcc=5, n_mels=8, text_dim=0, symbolic_dim=20, n_classes=3,
                multilabel=False, n_chroma=12)
    assert build_model(ModelConfig(audio_meter_templates=0), dims).audio_meter is None
    assert build_model(ModelConfig(audio_meter_templates=2, modalities=("mfcc", "symbolic")),
                       dims).audio_meter is None
    # the meter head alone makes a model read the chroma
    cfg = ModelConfig(audio_pitch_templates=0, audio_meter_templates=2)
    assert uses_chroma(cfg, dims) and build_model(cfg, dims).reads_chroma
    assert not uses_chroma(ModelConfig(audio_pitch_templates=0, audio_meter_templates=0), dims)


def test_close_streams_keeps_a_notes_only_model_exact_when_the_audio_arrives():
    m = _model(audio_pitch_templates=2)
    x = _batch()
    notes = {k: x[k] for k in ("symbolic", "symbolic_mask")}
    before = m(notes)
    m.close_streams(("symbolic",))
    torch.testing.assert_close(m(x), before)
    assert torch.all(m.audio_meter_norm.weight == m.cfg.audio_pitch_gain)


def test_feature_matched_baselines_pool_the_same_profile():
    from mmengine.models.baselines import audio_meter_features

    x = _batch(3, 400)
    got = audio_meter_features(x["logmel"].numpy(), x["chroma"].numpy())
    want = np.stack([_librosa_profile(x["logmel"][i].double().numpy(),
                                      x["chroma"][i].double().numpy()).ravel()
                     for i in range(3)])
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_a_training_batch_of_one_clip_runs():
    """The last training batch of a split can hold one clip: the clip-level BatchNorms (key
    scores, meter profile, audio heads) then use their running statistics instead of failing
    on one value per channel, and a batch of two still trains them."""
    m = _model(audio_pitch_templates=2).train()
    x = {k: v[:1] for k, v in _batch().items()}
    before = m.audio_meter_norm.running_mean.clone()
    m(x).sum().backward()
    torch.testing.assert_close(m.audio_meter_norm.running_mean, before)
    m(_batch())
    assert not torch.equal(m.audio_meter_norm.running_mean, before)
