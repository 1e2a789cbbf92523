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

from typing import List, Sequence

import numpy as np
import torch
from torch import nn

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
