"""Streams the fusion model derives from its inputs so that rhythm and pitch reach the recurrence.

Both are parts of the model graph, computed from the arrays every engine already feeds (the
log-Mel and the symbolic notes), so every backend (torch, native, ONNX, TensorRT, GPU) serves
them with no change to any front end:

* ``SpectralFlux`` — the rhythm stream: multi-band positive spectral flux of the log-Mel at the
  full frame rate (43 frames/s), the onset strength of librosa::

      librosa.onset.onset_strength_multi(S=logmel_db, lag=1, max_size=1, detrend=False,
                                         center=False, aggregate=np.mean,
                                         channels=band_edges(n_mels, bands))

  (parity tested in ``tests/test_streams.py``).
* ``DilatedStem`` — residual dilated 1-D convolutions at the full frame rate whose receptive
  field covers a bar (dilations 1…32, kernel 3: 129 frames ≈ 3.0 s) before any downsampling, so
  "3 versus 4 notes per beat" and "2 versus 3 beats per bar" survive into the recurrence.
* ``chroma_profile`` — the same view of the audio: the front end's chroma (dB, the pitch stream
  of ``FrontendConfig.chroma_bins``), each frame scaled to its loudest pitch class (librosa's
  ``norm=np.inf`` chroma), averaged over the clip and standardised; the audio key scores are a
  second ``PitchClassHead`` on it (``ModelConfig.audio_pitch_templates``).
* ``PitchClassHead`` — a transposition-invariant view of the notes: the clip's duration-weighted
  pitch-class profile (the mean of the 12 pitch-class rows), standardised, correlated circularly
  with ``K`` learnable templates over all 12 rotations, then the maximum over rotations. The
  first four templates start as the Krumhansl–Kessler and the Aarden–Essen major and minor key
  profiles, so at initialisation the head computes the Krumhansl–Schmuckler key-finding
  correlations; mode is then a difference of two outputs, in every key at once.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..config import AUDIO_METER_SHIFTS, log_lag_weights

#: Krumhansl & Kessler (1982) probe-tone profiles, tonic first (C major / C minor)
KK_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KK_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
#: Aarden–Essen profiles (music21's default key analysis, which labels ``vocal``)
AE_MAJOR = (17.7661, 0.145624, 14.9265, 0.160186, 19.8049, 11.3587, 0.291248, 22.062,
            0.145624, 8.15494, 0.232998, 4.95122)
AE_MINOR = (18.2648, 0.737619, 14.0499, 16.8599, 0.702494, 14.4362, 0.702494, 18.6161,
            4.56621, 1.93186, 7.37619, 1.75623)
#: rows of the symbolic features holding the pitch-class roll (``features.symbolic``)
PITCH_CLASS_ROWS = 12


def band_edges(n_mels: int, bands: int) -> List[int]:
    """``bands + 1`` Mel-band indices splitting ``n_mels`` into contiguous, near-equal bands."""
    if not 1 <= bands <= n_mels:
        raise ValueError(f"flux bands must be in 1..{n_mels}, got {bands}")
    return [int(round(i * n_mels / bands)) for i in range(bands + 1)]


class SpectralFlux(nn.Module):
    """(B, n_mels, T) log-Mel in dB → (B, bands, T) positive flux, frame 0 = 0.

    ``out[b, k, t] = mean over Mel bands m of band k of max(0, S[b, m, t] − S[b, m, t−1])``.
    The band averaging is one fixed 0/1 (bands × n_mels) matrix and the band sizes, so the layer exports to ONNX as a
    Sub, a Relu, a MatMul and a Div.
    """

    def __init__(self, n_mels: int, bands: int):
        super().__init__()
        edges = band_edges(n_mels, bands)
        member = torch.zeros(bands, n_mels)
        for k in range(bands):
            member[k, edges[k]:edges[k + 1]] = 1.0
        # 0/1 membership and integer counts: exact in any float type (a stored 1/13 is not)
        self.register_buffer("band_member", member, persistent=False)
        self.register_buffer("band_count", member.sum(1, keepdim=True), persistent=False)
        self.bands = bands

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        d = torch.relu(logmel[:, :, 1:] - logmel[:, :, :-1])  # (B, M, T-1)
        flux = torch.matmul(self.band_member, d) / self.band_count  # (B, K, T-1)
        return nn.functional.pad(flux, (1, 0))


class DilatedStem(nn.Module):
    """Conv1d (kernel 3) + BatchNorm + ReLU into ``channels``, then one residual block per
    dilation ``d`` (``x + ReLU(BN(Conv1d(x, kernel 3, dilation d)))``); length preserved.
    Receptive field: ``3 + 2·sum(dilations)`` frames."""

    def __init__(self, in_ch: int, channels: int, dilations: Sequence[int]):
        super().__init__()
        self.inp = nn.Sequential(nn.Conv1d(in_ch, channels, 3, padding=1),
                                 nn.BatchNorm1d(channels), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv1d(channels, channels, 3, padding=int(d), dilation=int(d)),
                          nn.BatchNorm1d(channels), nn.ReLU())
            for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = x + block(x)
        return x


def receptive_field(dilations: Sequence[int]) -> int:
    """Frames seen by one output frame of ``DilatedStem`` (kernel 3 everywhere)."""
    return 3 + 2 * int(sum(dilations))


def pitch_class_profile(symbolic: torch.Tensor) -> torch.Tensor:
    """(B, S, T) symbolic features → (B, 12): each pitch class's share of the sounding frames
    (duration-weighted), standardised over the 12 classes (zeros for a clip with no notes)."""
    return _standardise(symbolic[:, :PITCH_CLASS_ROWS].mean(dim=2))


def chroma_profile(chroma_db: torch.Tensor) -> torch.Tensor:
    """(B, 12, T) chroma in dB → (B, 12) pitch-class profile, standardised over the 12 classes.

    ``10 ** ((c[b, j, t] − max_j c[b, j, t]) / 10)`` is each frame's chroma over its largest
    bin (librosa's ``chroma_stft(..., norm=np.inf)``); its mean over the frames is the profile.
    A silent frame (every bin at the dB floor) adds the same to every class, which the
    standardisation removes."""
    rel = chroma_db - chroma_db.amax(dim=1, keepdim=True)
    prof = torch.pow(10.0, rel / 10.0).mean(dim=2)
    return _standardise(prof)


def lagged_sums(x: torch.Tensor, lags: torch.Tensor) -> torch.Tensor:
    """(B, C, N) → (B, len(lags)): ``sum over c and t < N − lag of x[b, c, t] · x[b, c, t + lag]``
    for each lag (librosa's ``autocorrelate`` along time, summed over ``c``): one Gather of
    constant indices into the zero-padded series when exported to ONNX, through the FFT
    otherwise (the two agree to float rounding: ``tests/test_audio_meter.py``)."""
    n = x.shape[2]
    if not torch.onnx.is_in_onnx_export():
        # the same sums through the FFT (Wiener–Khinchin, zero-padded past 2N − 1: no wrap):
        # ~20x faster in training, where a batch of 64 clips would spend 0.45 s in the gather
        size = 1 << int(max(2 * n - 1, n + int(lags.max()))).bit_length()
        f = torch.fft.rfft(x.double(), n=size, dim=2)
        full = torch.fft.irfft((f * f.conj()).sum(dim=1), n=size, dim=1)  # (B, size)
        return full[:, lags].to(x.dtype)
    pad = nn.functional.pad(x, (0, int(lags.max()) if len(lags) else 0))
    idx = lags[:, None] + torch.arange(n, device=x.device)[None, :]  # (L, N)
    return (x[:, :, None, :] * pad[:, :, idx]).sum(dim=(1, 3))


def audio_meter_profile(logmel_db: torch.Tensor, chroma_db: Optional[torch.Tensor],
                        lags: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The audio's periodicities on a log-lag axis → (B, 2, bins) (second row zero without a
    chroma); ``lags`` and ``weights`` from ``log_lag_weights``.

    Row 0: the autocorrelation coefficient ``r[lag] / r[0]`` of the onset envelope ``e`` —
    the mean over Mel bands of the positive frame-to-frame rise of the log-Mel in dB (frame 0
    is 0: ``SpectralFlux`` with one band), centred over the clip. Row 1: the chroma's
    self-similarity — the mean, over the ``T − lag`` frame pairs, of the cosine between a
    frame's linear chroma (over its loudest class, as ``chroma_profile``) and the chroma
    ``lag`` frames later — standardised over the bins. Each is read at the lags of
    ``log_lag_weights`` (linear interpolation): a note, a beat, a bar and a phrase repeat at
    lags whose ratios are the meter's, whatever the tempo. Reference:
    ``features.reference.audio_meter_profile`` (librosa's ``onset_strength`` and
    ``autocorrelate``)."""
    T = logmel_db.shape[2]
    d = torch.relu(logmel_db[:, :, 1:] - logmel_db[:, :, :-1]).mean(dim=1, keepdim=True)
    d = nn.functional.pad(d, (1, 0))
    e = d - d.mean(dim=2, keepdim=True)
    energy = (e * e).sum(dim=(1, 2))
    ac = lagged_sums(e, lags) / (energy[:, None] + 1e-8)
    rows = [torch.matmul(ac, weights)]
    if chroma_db is not None:
        c = torch.pow(10.0, (chroma_db - chroma_db.amax(dim=1, keepdim=True)) / 10.0)
        c = c / torch.sqrt((c * c).sum(dim=1, keepdim=True) + 1e-12)
        pairs = torch.clamp(T - lags.to(c.dtype), min=1.0)
        rows.append(_standardise(torch.matmul(lagged_sums(c, lags) / pairs, weights)))
    else:
        rows.append(torch.zeros_like(rows[0]))
    return torch.stack(rows, dim=1)


class AudioMeterHead(nn.Module):
    """(B, M, T) log-Mel (dB) and (B, 12, T) chroma (dB) → (B, 2·bins + K): the audio's
    meter, for a user without notes.

    The output is the profile of ``audio_meter_profile`` (2 rows × ``AUDIO_METER_BINS``
    log-spaced lags, flattened row by row), then ``K`` tempo-invariant template scores: the
    profile correlated with ``K`` learnable two-row templates of ``AUDIO_METER_WIDTH`` lags at
    each of ``AUDIO_METER_SHIFTS`` positions, the maximum over positions kept (the log-lag
    analogue of ``PitchClassHead``'s maximum over rotations: a change of tempo within the
    shifts' range moves the best position, not the score). A probe of the same profile
    (``bench/audio_meter_probe.py``) tells folk's dance types apart without the notes.
    """

    def __init__(self, templates: int, shifts: int = AUDIO_METER_SHIFTS):
        super().__init__()
        if templates < 0:
            raise ValueError(f"audio meter templates must be >= 0, got {templates}")
        lags, w = log_lag_weights()
        if not 1 <= shifts < w.shape[1]:
            raise ValueError(f"shifts must be in 1..{w.shape[1] - 1}, got {shifts}")
        self.register_buffer("lags", torch.from_numpy(lags), persistent=False)
        self.register_buffer("lag_weights", torch.from_numpy(w).float(), persistent=False)
        self.bins = w.shape[1]
        self.shifts = shifts
        self.width = self.bins - shifts + 1
        self.templates = nn.Parameter(torch.randn(templates, 2, self.width) * 0.1)
        idx = torch.arange(shifts)[:, None] + torch.arange(self.width)[None, :]  # (S, W)
        self.register_buffer("shift_index", idx, persistent=False)
        self.out_dim = 2 * self.bins + templates

    def profile(self, logmel_db: torch.Tensor, chroma_db: Optional[torch.Tensor]) -> torch.Tensor:
        """(B, 2, bins) log-lag profile (``audio_meter_profile``)."""
        return audio_meter_profile(logmel_db, chroma_db, self.lags, self.lag_weights)

    def scores(self, profile: torch.Tensor) -> torch.Tensor:
        """(B, 2, bins) profile → (B, K): max over positions of the template correlations."""
        B, S, W = profile.shape[0], self.shifts, self.width
        win = profile[:, :, self.shift_index].transpose(1, 2).reshape(B, S, 2 * W)
        r = torch.matmul(win, self.templates.reshape(-1, 2 * W).t()) / (2 * W)  # (B, S, K)
        return r.amax(dim=1)

    def forward(self, logmel_db: torch.Tensor, chroma_db: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        prof = self.profile(logmel_db, chroma_db)
        parts = [prof.reshape(prof.shape[0], -1)]
        if self.templates.shape[0]:
            parts.append(self.scores(prof))
        return torch.cat(parts, dim=1)


def _standardise(prof: torch.Tensor) -> torch.Tensor:
    prof = prof - prof.mean(dim=1, keepdim=True)
    scale = torch.sqrt((prof * prof).mean(dim=1, keepdim=True) + 1e-8)
    return prof / scale


def _standardised(profile: Sequence[float]) -> np.ndarray:
    p = np.asarray(profile, dtype=np.float64)
    p = p - p.mean()
    return p / np.sqrt((p * p).mean())


class PitchClassHead(nn.Module):
    """(B, S, T) symbolic features → (B, K) transposition-invariant key-template scores.

    ``r[b, k, s] = mean_j W[k, j] · z[b, (j + s) mod 12]`` for the standardised profile ``z``
    and every rotation ``s``; the output is ``max_s r[b, k, s]``. Rolling the 12 pitch-class
    rows (transposing the piece) permutes ``s`` and leaves the output unchanged.
    """

    def __init__(self, templates: int):
        super().__init__()
        if templates < 2:
            raise ValueError(f"pitch templates must be >= 2, got {templates}")
        w = torch.randn(templates, PITCH_CLASS_ROWS) * 0.5
        for i, prof in enumerate((KK_MAJOR, KK_MINOR, AE_MAJOR, AE_MINOR)[:templates]):
            w[i] = torch.from_numpy(_standardised(prof)).float()
        self.templates = nn.Parameter(w)
        # gather index: rotation s of the profile is z[(j + s) mod 12]
        idx = (torch.arange(12)[None, :] + torch.arange(12)[:, None]) % 12  # (s, j)
        self.register_buffer("rot_index", idx.reshape(-1), persistent=False)
        self.out_dim = templates

    def forward(self, symbolic: torch.Tensor) -> torch.Tensor:
        return self.scores(pitch_class_profile(symbolic))

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 12) standardised profile → (B, K) key-template scores (max over rotations)."""
        rot = z[:, self.rot_index].reshape(z.shape[0], 12, 12)  # (B, s, j)
        r = torch.matmul(rot, self.templates.t()) / 12.0  # (B, s, K)
        return r.amax(dim=1)
