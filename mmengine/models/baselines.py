"""Baselines: a 2D CNN on the log-Mel image (torch) and SVM / random forest (scikit-learn) on
pooled clip statistics. The plain-RNN baseline is ``FusionLSTM`` with ``cell="rnn"``.

Pooled statistics (``PooledFeatures``), per clip:
    mfcc      mean, std and mean |Δ| over time of every coefficient          (3 · n_mfcc)
    mel       mean and std over time of every band                           (2 · n_mels)
              + rhythm: autocorrelation of the onset envelope (half-wave rectified spectral
              flux of the log-Mel, averaged over bands), in 2-frame bins up to ``max_lag_s``,
              and sampled at ratios (1/4 … 4) of the dominant beat lag (beat-normalised)
    text      TF-IDF reduced by truncated SVD (fit on training rows with text) + present flag
    symbolic  mean, std and mean |Δ| over time of every feature, the same rhythm features
              computed from the symbolic rows' rectified flux (note onsets), + present flag
With ``streams=True`` (the feature-matched baselines ``svm_streams`` / ``rf_streams``: the same
cues the default fusion model gets), also:
    mel       the beat-normalised rhythm features of each of the fusion model's flux bands
              (``band_rhythm_features``), and the same key features as the notes' computed
              from the chroma pitch stream's profile (``chroma_key_features``) when the data
              has one, and the audio meter profile the fusion model's ``AudioMeterHead``
              reads (``audio_meter_features``: onset-envelope autocorrelation and chroma
              self-similarity on a log-lag axis)
    symbolic  the transposition-invariant key features of the notes (``key_features``:
              key-profile correlations and the tonic-relative pitch-class profile)
All columns are standardised with training-split statistics.
"""
from __future__ import annotations

import itertools
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..config import MODALITIES, FrontendConfig, ModelConfig
from .blocks import Classifier, FeatureNorm

BEAT_RATIOS = (0.25, 1 / 3, 0.5, 2 / 3, 0.75, 1.0, 4 / 3, 1.5, 2.0, 3.0, 4.0)
DEFAULT_FRAME_RATE = FrontendConfig().sample_rate / FrontendConfig().hop_length


class MelCNN(Classifier):
    """2D CNN on the normalised log-Mel image (B, 1, n_mels, T).

    Blocks ``Conv2d 3×3 → BatchNorm → ReLU → MaxPool 2×2`` with ``cfg.cnn_channels``; the
    first convolution strides ``cfg.cnn_stride`` = (bands, frames), by default (2, 4): 64 bands
    × T/4 frames, the fusion LSTM's time resolution (this keeps an epoch on 2 CPU cores within
    2× the LSTM's). Then the mean over frequency, mean and max over time (B, 2·C), dropout
    ``cfg.dropout``, linear head.
    Same constructor and batch interface as ``FusionLSTM`` (only ``"logmel"`` is read).
    """

    def __init__(self, cfg: ModelConfig, n_mfcc: int, n_mels: int, text_dim: int,
                 symbolic_dim: int, n_classes: int, multilabel: bool = False):
        super().__init__()
        if not cfg.cnn_channels:
            raise ValueError("cnn_channels must name at least one block")
        self.cfg = cfg
        self.modalities = ("mel",)
        self.multilabel = bool(multilabel)
        self.dims = dict(n_mfcc=n_mfcc, n_mels=n_mels, text_dim=text_dim,
                         symbolic_dim=symbolic_dim, n_classes=n_classes,
                         multilabel=bool(multilabel))
        self.norm = FeatureNorm({"mel": n_mels})
        layers: List[nn.Module] = []
        c_in = 1
        for i, c in enumerate(cfg.cnn_channels):
            stride = tuple(cfg.cnn_stride) if i == 0 else 1
            layers += [nn.Conv2d(c_in, c, 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2 * c_in, n_classes)

    def forward(self, batch) -> torch.Tensor:
        """Logits (B, C)."""
        x = self.norm("mel", batch["logmel"].float())[:, None]
        z = self.features(x).mean(dim=2)  # (B, C, T'')
        z = torch.cat([z.mean(dim=2), z.amax(dim=2)], dim=1)
        return self.head(self.dropout(z))

    def set_normalization(self, stats) -> None:
        self.norm.set_stats(stats)


# ------------------------------------------------------------------ pooled statistics
def onset_envelope(logmel: np.ndarray) -> np.ndarray:
    """(N, n_mels, T) log-Mel → (N, T-1) mean over bands of max(0, Δ_t logmel)."""
    return np.maximum(np.diff(logmel, axis=2), 0.0).mean(axis=1)


def autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """(N, T) → (N, max_lag + 1) autocorrelation of the mean-removed rows, normalised so lag 0
    is 1 (a constant row gives zeros)."""
    x = x - x.mean(axis=1, keepdims=True)
    n = x.shape[1]
    size = 1 << int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(x, size, axis=1)
    ac = np.fft.irfft(f * np.conj(f), size, axis=1)[:, : max_lag + 1]
    denom = ac[:, :1]
    return np.divide(ac, denom, out=np.zeros_like(ac), where=denom > 1e-12)


def rhythm_features(logmel: np.ndarray, frame_rate: float, max_lag_s: float = 3.0,
                    beat_range_s: Tuple[float, float] = (0.3, 1.5)) -> np.ndarray:
    """Onset-envelope autocorrelation: binned lags 1..max_lag (2 frames per bin), the dominant
    beat lag (s) and its strength, and the autocorrelation at ``BEAT_RATIOS`` × beat lag.
    (N, n_mels, T) → (N, F)."""
    env = onset_envelope(np.asarray(logmel, dtype=np.float64))
    max_lag = int(min(env.shape[1] - 1, round(max_lag_s * frame_rate)))
    if max_lag < 4:
        return np.zeros((len(env), 2 + len(BEAT_RATIOS)), dtype=np.float64)
    ac = autocorrelation(env, max_lag)
    n_bins = max_lag // 2
    binned = ac[:, 1: 1 + 2 * n_bins].reshape(len(ac), n_bins, 2).mean(axis=2)
    lo = max(1, int(round(beat_range_s[0] * frame_rate)))
    hi = max(lo + 1, min(max_lag, int(round(beat_range_s[1] * frame_rate))))
    beat = lo + np.argmax(ac[:, lo:hi + 1], axis=1)
    lags = np.arange(max_lag + 1)
    r = np.asarray(BEAT_RATIOS)
    ratios = np.stack([np.interp(b * r, lags, row) for b, row in zip(beat, ac)])
    strength = ac[np.arange(len(ac)), beat]
    return np.concatenate([binned, (beat / frame_rate)[:, None], strength[:, None], ratios], 1)


def band_rhythm_features(logmel: np.ndarray, frame_rate: float, bands: int) -> np.ndarray:
    """Per flux band (``streams.band_edges``): the dominant beat lag, its strength and the
    autocorrelation at ``BEAT_RATIOS`` × beat lag of that band's onset envelope.
    (N, n_mels, T) → (N, bands · (2 + len(BEAT_RATIOS)))."""
    from .streams import band_edges

    k = 2 + len(BEAT_RATIOS)
    edges = band_edges(logmel.shape[1], bands)
    return np.concatenate([rhythm_features(logmel[:, a:b], frame_rate)[:, -k:]
                           for a, b in zip(edges, edges[1:])], axis=1)


def audio_meter_features(logmel: np.ndarray, chroma: Optional[np.ndarray],
                         chunk: int = 64) -> np.ndarray:
    """(N, n_mels, T) log-Mel and (N, 12, T) chroma (dB, or None) → (N, 2 · bins): the
    profile of ``streams.audio_meter_profile`` (float64), flattened row by row."""
    from ..config import log_lag_weights
    from .streams import audio_meter_profile

    lags, w = log_lag_weights()
    lags_t, w_t = torch.from_numpy(lags), torch.from_numpy(w)
    out = []
    for a in range(0, len(logmel), chunk):
        mel = torch.from_numpy(np.asarray(logmel[a:a + chunk], dtype=np.float64))
        ch = (None if chroma is None
              else torch.from_numpy(np.asarray(chroma[a:a + chunk], dtype=np.float64)))
        with torch.no_grad():
            out.append(audio_meter_profile(mel, ch, lags_t, w_t).reshape(len(mel), -1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 2 * w.shape[1]))


def key_features(symbolic: np.ndarray) -> np.ndarray:
    """Transposition-invariant key features of the pitch-class rows (0–11) of (N, S, T)
    symbolic features, for the Krumhansl–Kessler and the Aarden–Essen profiles (the fusion
    model's pitch head starts from both): the best major and minor correlations over the 12
    keys and their difference, then the standardised pitch-class profile rotated so that the
    best-correlating Aarden–Essen key's tonic comes first. (N, 6 + 12); zeros for a clip
    without notes."""
    return profile_key_features(np.asarray(symbolic, dtype=np.float64)[:, :12].mean(axis=2))


def chroma_key_features(chroma_db: np.ndarray) -> np.ndarray:
    """``key_features`` of the audio: the profile of (N, 12, T) chroma in dB as the fusion
    model's audio pitch head reads it (``streams.chroma_profile``: each frame over its
    loudest class, averaged). (N, 6 + 12)."""
    c = np.asarray(chroma_db, dtype=np.float64)
    return profile_key_features((10.0 ** ((c - c.max(axis=1, keepdims=True)) / 10.0)).mean(2))


def profile_key_features(prof: np.ndarray) -> np.ndarray:
    """``key_features`` of (N, 12) pitch-class profiles (any scale: each is standardised)."""
    from .streams import AE_MAJOR, AE_MINOR, KK_MAJOR, KK_MINOR, _standardised

    prof = prof - prof.mean(axis=1, keepdims=True)
    z = prof / np.sqrt((prof * prof).mean(axis=1, keepdims=True) + 1e-8)
    idx = (np.arange(12)[None, :] + np.arange(12)[:, None]) % 12  # rotation s: z[(j + s) % 12]
    rot = z[:, idx]  # (N, 12 rotations, 12)
    cols = []
    for maj, mnr in ((KK_MAJOR, KK_MINOR), (AE_MAJOR, AE_MINOR)):
        major = rot @ _standardised(maj) / 12.0
        minor = rot @ _standardised(mnr) / 12.0
        cols += [major.max(1, keepdims=True), minor.max(1, keepdims=True),
                 (major.max(1) - minor.max(1))[:, None]]
    best = np.where(major.max(1) >= minor.max(1), major.argmax(1), minor.argmax(1))
    cols.append(rot[np.arange(len(z)), best])
    return np.concatenate(cols, axis=1)


def _series_stats(x: np.ndarray) -> np.ndarray:
    """(N, F, T) → (N, 3F): mean, std, mean |Δ| over time."""
    x = np.asarray(x, dtype=np.float64)
    d = np.abs(np.diff(x, axis=2)).mean(axis=2) if x.shape[2] > 1 else np.zeros(x.shape[:2])
    return np.concatenate([x.mean(axis=2), x.std(axis=2), d], axis=1)


class PooledFeatures:
    """Clip-level feature matrix for the scikit-learn baselines (fit on the training split).

    Args:
        modalities: subset of ``MODALITIES``.
        frame_rate: frames per second of the series (for the rhythm lags).
        text_components: SVD components kept from the TF-IDF rows.
    """

    def __init__(self, modalities: Sequence[str] = MODALITIES,
                 frame_rate: float = DEFAULT_FRAME_RATE, text_components: int = 64,
                 streams: bool = False, flux_bands: int = ModelConfig().flux_bands):
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        self.streams = bool(streams)
        self.flux_bands = int(flux_bands)
        self.frame_rate = frame_rate
        self.text_components = text_components
        self.svd = None
        self.scaler = None

    def _raw(self, fs) -> np.ndarray:
        cols = []
        if "mfcc" in self.modalities:
            cols.append(_series_stats(fs.mfcc))
        if "mel" in self.modalities:
            mel = np.asarray(fs.logmel, dtype=np.float64)
            cols += [mel.mean(axis=2), mel.std(axis=2), rhythm_features(mel, self.frame_rate)]
            if self.streams:
                cols.append(band_rhythm_features(mel, self.frame_rate, self.flux_bands))
                chroma = getattr(fs, "chroma", None)
                if chroma is not None:
                    cols.append(chroma_key_features(chroma))
                cols.append(audio_meter_features(fs.logmel, chroma))
        if "text" in self.modalities and fs.text is not None and self.svd is not None:
            mask = _mask(fs.text_mask, len(fs.ids))
            z = self.svd.transform(np.asarray(fs.text, dtype=np.float64)) * mask[:, None]
            cols += [z, mask[:, None].astype(np.float64)]
        if "symbolic" in self.modalities and fs.symbolic is not None:
            mask = _mask(fs.symbolic_mask, len(fs.ids))
            sym = np.nan_to_num(np.asarray(fs.symbolic, dtype=np.float64))
            stats = np.concatenate([_series_stats(sym), rhythm_features(sym, self.frame_rate)], 1)
            if self.streams and sym.shape[1] >= 12:
                stats = np.concatenate([stats, key_features(sym)], 1)
            cols += [stats * mask[:, None], mask[:, None].astype(np.float64)]
        if not cols:
            raise ValueError(f"no features: modalities {self.modalities} absent from the data")
        return np.concatenate(cols, axis=1)

    def fit(self, train_fs) -> "PooledFeatures":
        self.fit_transform(train_fs)
        return self

    def fit_transform(self, train_fs) -> np.ndarray:
        """Fit on ``train_fs`` and return its (N, F) standardised features."""
        from sklearn.decomposition import TruncatedSVD
        from sklearn.preprocessing import StandardScaler

        if "text" in self.modalities and train_fs.text is not None:
            rows = _mask(train_fs.text_mask, len(train_fs.ids))
            text = np.asarray(train_fs.text, dtype=np.float64)[rows]
            k = min(self.text_components, text.shape[1] - 1, len(text) - 1)
            if k >= 1:
                self.svd = TruncatedSVD(n_components=k, random_state=0).fit(text)
        raw = self._raw(train_fs)
        self.scaler = StandardScaler().fit(raw)
        return self.scaler.transform(raw)

    def transform(self, fs) -> np.ndarray:
        """(N, F) float64 standardised features."""
        if self.scaler is None:
            raise RuntimeError("PooledFeatures.transform before fit")
        return self.scaler.transform(self._raw(fs))


def _mask(mask, n: int) -> np.ndarray:
    return np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)


# ------------------------------------------------------------------ scikit-learn models
SVM_GRID = {"C": (0.1, 1.0, 10.0, 100.0), "gamma_scale": (0.1, 0.3, 1.0, 3.0),
            "class_weight": (None, "balanced")}
RF_GRID = {"n_estimators": (200, 500), "max_depth": (None, 8, 16), "max_features": ("sqrt", 0.1),
           "class_weight": (None, "balanced_subsample")}


class SklearnBaseline:
    """SVM (RBF) or random forest on ``PooledFeatures``, hyper-parameters chosen on validation
    macro-F1 (the test split is never seen by ``fit``).

    Args:
        kind: "svm" or "rf".
        modalities: modalities pooled into the features.
        seed: random forest seed.
        grid: override of ``SVM_GRID`` / ``RF_GRID`` (same keys). For the SVM, ``gamma`` is
            ``gamma_scale / n_features`` (1 = scikit-learn's "scale" on standardised data).
        frame_rate, streams: see ``PooledFeatures``.
    Attributes (after fit): ``best_params``, ``search`` (list of (params, val macro-F1)).
    """

    def __init__(self, kind: str, modalities: Sequence[str] = MODALITIES, seed: int = 0,
                 grid: Optional[Dict[str, Sequence]] = None,
                 frame_rate: float = DEFAULT_FRAME_RATE, n_jobs: int = 2,
                 streams: bool = False):
        if kind not in ("svm", "rf"):
            raise ValueError(f"kind must be 'svm' or 'rf', got {kind!r}")
        self.kind = kind
        self.seed = seed
        self.n_jobs = n_jobs
        self.grid = dict(grid or (SVM_GRID if kind == "svm" else RF_GRID))
        self.features = PooledFeatures(modalities, frame_rate, streams=streams)
        self.model = None
        self.best_params: Optional[dict] = None
        self.search: List[Tuple[dict, float]] = []

    def _make(self, params: dict, n_features: int, multilabel: bool):
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.svm import SVC

        if self.kind == "svm":
            p = dict(params)
            gamma = p.pop("gamma_scale") / max(1, n_features)
            clf = SVC(kernel="rbf", gamma=gamma, **p)
            return OneVsRestClassifier(clf, n_jobs=self.n_jobs) if multilabel else clf
        return RandomForestClassifier(random_state=self.seed, n_jobs=self.n_jobs, **params)

    def fit(self, train_fs, val_fs) -> "SklearnBaseline":
        from ..metrics import classification_metrics

        multilabel = np.asarray(train_fs.labels).ndim == 2
        n_classes = len(train_fs.label_names)
        x_tr = self.features.fit_transform(train_fs)
        x_va = self.features.transform(val_fs)
        y_tr = np.asarray(train_fs.labels)
        y_tr = (y_tr > 0.5).astype(int) if multilabel else y_tr
        keys = sorted(self.grid)
        best = (-1.0, None, None)
        self.search = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            params = dict(zip(keys, values))
            if multilabel and params.get("class_weight") == "balanced_subsample":
                continue
            model = self._make(params, x_tr.shape[1], multilabel).fit(x_tr, y_tr)
            f1 = classification_metrics(val_fs.labels, model.predict(x_va), n_classes,
                                        multilabel=multilabel)["macro_f1"]
            self.search.append((params, float(f1)))
            if f1 > best[0]:
                best = (f1, params, model)
        self.best_params, self.model = best[1], best[2]
        return self

    def predict(self, fs) -> np.ndarray:
        """(N,) class indices, or (N, C) 0/1 for multi-label data."""
        if self.model is None:
            raise RuntimeError("predict before fit")
        return np.asarray(self.model.predict(self.features.transform(fs)))
