"""Early-fusion recurrent classifier (Yang, 2025: MFCC + log-Mel + TF-IDF fused per frame → LSTM).

A batch is a dict of tensors (``N`` clips, ``T`` frames)::

    "mfcc"          (B, n_mfcc, T)  float32   MFCC series
    "logmel"        (B, n_mels, T)  float32   log-Mel "image" (dB)
    "text"          (B, V)          float32   TF-IDF row (zero row when missing)
    "text_mask"     (B,)            bool      False = no text
    "symbolic"      (B, S, T)       float32   per-frame symbolic features
    "symbolic_mask" (B,)            bool      False = no symbolic part
    "chroma"        (B, 12, T)      float32   chroma in dB (the audio pitch stream; only for
                                              a model with the audio pitch or meter head)
    "mfcc_mask", "mel_mask" (B,)    bool      optional (default: present)

Input normalisation (``FeatureNorm``): every time-series modality is standardised per feature
row, ``x_norm[b, k, t] = (x[b, k, t] - mean[k]) / std[k]``, where ``mean[k]``/``std[k]`` are the
mean and (population) standard deviation of feature ``k`` over all frames of all *training* clips
(``compute_norm_stats``; symbolic statistics over clips whose symbolic mask is True only; a
standard deviation below 1e-6 is replaced by 1). The statistics are buffers of the model, so
they travel in the checkpoint (``norm.mfcc_mean``, ``norm.mfcc_std``, ``norm.mel_mean``, ...).
TF-IDF rows are used as they are (already L2-normalised).

Model = ``sequence_features`` (everything before the recurrence: the normalised inputs through
the conv stems, fused per frame into the sequence the LSTM reads; runs in torch/numpy at
inference) + ``classifier`` (``nn.LSTM`` stack → pooling → dropout → linear head), so an
inference engine can run ``classifier.rnn`` and ``classifier.head`` natively.

Missing modalities are explicit: a missing (or dropped) modality's features are zeroed *and* its
0/1 mask channel is 0 on every frame; its input values cannot change the output.

This module holds ``FusionLSTM`` (fusion, masks, modality dropout, augmentation) and the batch
dict; the generic blocks it assembles (``FeatureNorm``, ``conv_stem``, ``SequenceClassifier``)
are in ``blocks.py`` (re-exported here), the music-specific streams in ``streams.py``.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..config import MODALITIES, ModelConfig, uses_chroma
from ..features.symbolic import METER_START
from .blocks import (  # noqa: F401 (re-exported: the blocks' old home)
    CELLS, POOLINGS, STD_FLOOR, Classifier, FeatureNorm, NoRecurrence, SequenceClassifier,
    compute_norm_stats, conv_stem, stem_frames)
from .streams import (PITCH_CLASS_ROWS, AudioMeterHead, DilatedStem, PitchClassHead,
                      SpectralFlux, chroma_profile)

SERIES = {"mfcc": "mfcc", "mel": "logmel", "symbolic": "symbolic"}  # modality -> batch key
#: further batch keys that belong to a modality (dropped, permuted and staged with it)
EXTRA_KEYS = {"mel": ("chroma",)}


def batch_keys(modality: str) -> Tuple[str, str]:
    """``(data key, mask key)`` of a modality in a batch dict (``batch_from_arrays``)."""
    return SERIES.get(modality, modality), f"{modality}_mask"


def _reference(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A (B, rows, T) time series of ``batch`` that gives the batch size and frame count: the
    log-Mel, else the MFCC, else the notes (training stage 1 runs on the notes alone)."""
    for key in ("logmel", "mfcc", "symbolic"):
        if key in batch:
            return batch[key]
    raise KeyError("the batch holds no time series (logmel, mfcc or symbolic)")


STEMS = ("dilated", "strided")
TEXT_FUSIONS = ("late", "early")


class FusionLSTM(Classifier):
    """Feature-level fusion per frame → recurrent stack → pooling (+ late clip-level streams)
    → head. ``ModelConfig`` describes both stem designs ("dilated", the default, and the first
    "strided" one).

    Args:
        cfg: ``ModelConfig`` (``arch`` must be "fusion"); ``cfg.cell`` picks LSTM/GRU/RNN.
        n_mfcc, n_mels: audio feature rows.
        text_dim: TF-IDF vocabulary size V (0 = no text in the data).
        symbolic_dim: per-frame symbolic features S (0 = none).
        n_classes: C.
        n_chroma: chroma bins of the audio pitch stream (0 = none; the audio pitch head
            needs 12).
        multilabel: sigmoid outputs (else softmax).

    Attributes:
        modalities: the modalities used (``cfg.modalities`` minus those absent from the data),
            in ``MODALITIES`` order; this is also the order of the fused feature blocks.
        dims: constructor sizes (stored in checkpoints to rebuild the model).
        norm: ``FeatureNorm`` with the training statistics.
        flux: ``SpectralFlux`` (rhythm stream) or None.
        pitch: ``PitchClassHead`` (clip-level, late) or None.
        audio_pitch: ``PitchClassHead`` on the chroma's profile (clip-level, late, masked
            with the log-Mel) or None.
        audio_meter: ``AudioMeterHead`` on the log-Mel's onset envelope and the chroma
            (clip-level, late after ``audio_pitch``, masked with the log-Mel) or None.
        reads_chroma: whether the model takes the chroma input (``config.uses_chroma``).
        meter_rows: symbolic rows of the meter profile read late (0 = none; the symbolic
            stem then reads all rows), standardised by ``meter_norm``.
        classifier: ``SequenceClassifier`` (the part an inference engine runs natively).
    """

    def __init__(self, cfg: ModelConfig, n_mfcc: int, n_mels: int, text_dim: int,
                 symbolic_dim: int, n_classes: int, multilabel: bool = False,
                 n_chroma: int = 0):
        super().__init__()
        unknown = [m for m in cfg.modalities if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; valid: {MODALITIES}")
        if n_classes < 2 and not multilabel:
            raise ValueError(f"need at least 2 classes, got {n_classes}")
        for name in ("modality_dropout", "text_dropout", "symbolic_dropout"):
            p = getattr(cfg, name)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        if cfg.stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {cfg.stem!r}")
        if cfg.text_fusion not in TEXT_FUSIONS:
            raise ValueError(f"text_fusion must be one of {TEXT_FUSIONS}, got {cfg.text_fusion!r}")
        if cfg.pool_stride < 1 or cfg.stem == "dilated" and not cfg.dilations:
            raise ValueError(f"the dilated stem needs pool_stride >= 1 and at least one "
                             f"dilation, got {cfg.pool_stride}, {cfg.dilations}")
        sizes = {"mfcc": n_mfcc, "mel": n_mels, "text": text_dim, "symbolic": symbolic_dim}
        self.modalities = tuple(m for m in MODALITIES if m in cfg.modalities and sizes[m] > 0)
        if not self.modalities:
            raise ValueError(f"none of the modalities {cfg.modalities} is present in the data "
                             f"(sizes {sizes})")
        self.cfg = cfg
        self.dims = dict(n_mfcc=n_mfcc, n_mels=n_mels, text_dim=text_dim,
                         symbolic_dim=symbolic_dim, n_classes=n_classes,
                         multilabel=bool(multilabel), n_chroma=int(n_chroma))
        self.multilabel = bool(multilabel)
        self.norm = FeatureNorm({m: sizes[m] for m in ("mfcc", "mel", "symbolic")
                                 if m in self.modalities})
        width = {"mfcc": cfg.mfcc_channels, "mel": cfg.mel_channels,
                 "symbolic": cfg.symbolic_channels, "text": cfg.text_dim}
        dilated = cfg.stem == "dilated"
        self.flux = (SpectralFlux(n_mels, cfg.flux_bands)
                     if dilated and "mel" in self.modalities and cfg.flux_bands > 0 else None)
        self.flux_norm = nn.BatchNorm1d(cfg.flux_bands) if self.flux is not None else None
        self.late_text = "text" in self.modalities and cfg.text_fusion == "late"
        self.pitch = (PitchClassHead(cfg.pitch_templates)
                      if dilated and "symbolic" in self.modalities and cfg.pitch_templates > 0
                      and symbolic_dim >= PITCH_CLASS_ROWS else None)
        # key scores are correlations in [-1, 1] with a small spread: standardised (running
        # statistics, like every BatchNorm here) before they meet the pooled LSTM outputs
        self.pitch_norm = nn.BatchNorm1d(cfg.pitch_templates) if self.pitch is not None else None
        # the same key scores from the audio's chroma: what a user without notes has
        self.reads_chroma = uses_chroma(cfg, self.dims)
        chroma = self.reads_chroma and cfg.audio_pitch_templates > 0
        self.audio_pitch = PitchClassHead(cfg.audio_pitch_templates) if chroma else None
        self.audio_pitch_norm = (nn.BatchNorm1d(cfg.audio_pitch_templates) if chroma
                                 else None)
        # the audio's periodicities (onset envelope and chroma self-similarity on a log-lag
        # axis), tempo-invariant templates: the meter of a user without notes
        meter = dilated and "mel" in self.modalities and cfg.audio_meter_templates > 0
        self.audio_meter = AudioMeterHead(cfg.audio_meter_templates) if meter else None
        self.audio_meter_norm = (nn.BatchNorm1d(self.audio_meter.out_dim) if meter
                                 else None)
        # the meter profile (clip-level symbolic rows, the same on every frame): its mean over
        # time, standardised, joins late; the symbolic stem reads the time-varying rows only
        self.meter_rows = (symbolic_dim - METER_START
                           if cfg.meter_profile and "symbolic" in self.modalities
                           and symbolic_dim > METER_START else 0)
        self.meter_norm = nn.BatchNorm1d(self.meter_rows) if self.meter_rows else None
        stem_rows = dict(sizes, symbolic=METER_START if self.meter_rows else symbolic_dim)
        self.stems = nn.ModuleDict()
        for m in self.modalities:
            if m == "text":
                self.stems[m] = nn.Sequential(nn.Linear(text_dim, cfg.text_dim), nn.ReLU())
            elif dilated:
                extra = cfg.flux_bands if (m == "mel" and self.flux is not None) else 0
                self.stems[m] = DilatedStem(stem_rows[m] + extra, width[m], cfg.dilations)
            else:
                self.stems[m] = conv_stem(stem_rows[m], width[m], cfg.stem_stages)
        self.sequence_modalities = tuple(m for m in self.modalities
                                         if not (m == "text" and self.late_text))
        if not self.sequence_modalities:
            raise ValueError("the model has no time series to run the recurrence on (text "
                             "alone needs text_fusion='early')")
        self.block_widths = {m: width[m] for m in self.sequence_modalities}
        self.fused_dim = sum(self.block_widths.values()) + len(self.sequence_modalities)
        late_dim = (cfg.text_dim + 1 if self.late_text else 0) + \
            (self.pitch.out_dim if self.pitch is not None else 0) + self.meter_rows + \
            self.audio_late_dim()
        self.classifier = SequenceClassifier(self.fused_dim, n_classes, cfg, late_dim)

    def audio_late_dim(self) -> int:
        """Columns of the audio's clip-level block, which closes the late block: the audio key
        scores, then the audio meter scores (each 0 when absent)."""
        return ((self.audio_pitch.out_dim if self.audio_pitch is not None else 0)
                + (self.audio_meter.out_dim if self.audio_meter is not None else 0))

    def out_frames(self, n_frames: int) -> int:
        """Steps of the recurrence for ``n_frames`` input frames."""
        if self.cfg.stem == "dilated":
            return -(-n_frames // self.cfg.pool_stride)
        return stem_frames(n_frames, self.cfg.stem_stages)

    # -- masks ----------------------------------------------------------------------------
    def modality_masks(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, M) float 0/1: which of ``self.modalities`` each clip has (before dropout)."""
        ref = _reference(batch)
        B = ref.shape[0]
        cols = []
        for m in self.modalities:
            mask = batch.get(f"{m}_mask")
            if SERIES.get(m, m) not in batch:
                cols.append(torch.zeros(B, device=ref.device))
            elif mask is None:
                cols.append(torch.ones(B, device=ref.device))
            else:
                cols.append(mask.to(device=ref.device, dtype=torch.float32).reshape(B))
        return torch.stack(cols, dim=1)

    def drop_modalities(self, masks: torch.Tensor) -> torch.Tensor:
        """Training-time modality dropout on (B, M) masks: each present modality is dropped
        with probability ``cfg.modality_dropout`` (text: ``cfg.text_dropout``, notes:
        ``cfg.symbolic_dropout``); a clip that
        would lose all its present modalities keeps one of them, chosen uniformly (uses the
        global torch RNG)."""
        special = {"text": self.cfg.text_dropout, "symbolic": self.cfg.symbolic_dropout}
        probs = torch.tensor([special.get(m, self.cfg.modality_dropout) for m in self.modalities],
                             device=masks.device)
        if float(probs.max()) <= 0 or masks.shape[1] < 2:
            return masks
        keep = masks * (torch.rand(masks.shape, device=masks.device) >= probs).to(masks.dtype)
        lost = (keep.sum(1) == 0) & (masks.sum(1) > 0)
        if lost.any():
            choice = torch.multinomial(masks[lost], 1).squeeze(1)
            keep[lost] = torch.nn.functional.one_hot(choice, masks.shape[1]).to(masks.dtype)
        return keep

    @torch.no_grad()
    def close_streams(self, kept: Tuple[str, ...]) -> None:
        """Zero every weight through which a modality outside ``kept`` reaches the logits: its
        block and mask channel in the first layer of the recurrence (with ``cell="none"``,
        their mean and max in the head), and the late text in the head.

        After a model has been trained on ``kept`` alone (the other modalities missing), this
        makes it give exactly the same outputs when they are present, so that training on
        every modality starts from the single-stream model (``TrainConfig.stage1_frac``). The
        stems of the other modalities keep their weights; gradients reach them again as soon
        as the zeroed weights move."""
        cls = self.classifier
        closed, col = [], 0
        for m in self.sequence_modalities:
            width = self.block_widths[m] + 1
            if m not in kept:
                closed.append((col, col + width))
            col += width
        D = col
        if cls.cell == "none":
            for a, b in closed:
                cls.head.weight[:, a:b] = 0
                if cls.pooling == "meanmax":
                    cls.head.weight[:, D + a:D + b] = 0
        else:
            w = cls.rnn.weight_ih_l0
            for a, b in closed:
                w[:, a:b] = 0
        if self.late_text and "text" not in kept:
            # encode() appends the late features in MODALITIES order, where "text" precedes
            # "symbolic": the text's (W + 1) columns open the late block
            start = cls.head.in_features - cls.late_dim
            cls.head.weight[:, start:start + self.cfg.text_dim + 1] = 0
        if self.audio_late_dim() and "mel" not in kept:
            # the audio key and meter scores close the late block (encode appends them
            # last); with their head columns at zero their scale is free: it starts at
            # audio_pitch_gain
            cls.head.weight[:, cls.head.in_features - self.audio_late_dim():] = 0
            for norm in (self.audio_pitch_norm, self.audio_meter_norm):
                if norm is not None:
                    norm.weight.fill_(self.cfg.audio_pitch_gain)

    # -- training-time augmentation ---------------------------------------------------------
    def _augment_mel(self, x: torch.Tensor) -> torch.Tensor:
        """SpecAugment: per clip, one run of up to ``spec_mask_bands`` normalised bands → 0."""
        F = self.cfg.spec_mask_bands
        if F <= 0:
            return x
        B, M, _ = x.shape
        width = torch.randint(0, F + 1, (B, 1), device=x.device)
        start = (torch.rand(B, 1, device=x.device) * (M - width + 1)).long()
        band = torch.arange(M, device=x.device)[None, :]
        keep = ~((band >= start) & (band < start + width))
        return x * keep[:, :, None].to(x.dtype)

    def _augment_symbolic(self, x: torch.Tensor) -> torch.Tensor:
        """Transposition: roll each clip's 12 pitch-class rows by a random 0..11 semitones."""
        if not self.cfg.pitch_rotation or x.shape[1] < PITCH_CLASS_ROWS:
            return x
        B = x.shape[0]
        shift = torch.randint(0, PITCH_CLASS_ROWS, (B, 1), device=x.device)
        idx = (torch.arange(PITCH_CLASS_ROWS, device=x.device)[None, :] - shift) % 12
        roll = torch.gather(x[:, :PITCH_CLASS_ROWS], 1,
                            idx[:, :, None].expand(-1, -1, x.shape[2]))
        return torch.cat([roll, x[:, PITCH_CLASS_ROWS:]], dim=1)

    # -- forward --------------------------------------------------------------------------
    def stream_dims(self) -> Dict[str, int]:
        """Width of each stream's clip summary that ``encode(..., parts=)`` collects: a
        time-series stem's mean and max over time (2W), the pitch head's key scores, the late
        text projection."""
        dims = {m: 2 * w for m, w in self.block_widths.items() if m != "text"}
        if self.pitch is not None:
            dims["pitch"] = self.pitch.out_dim
        if self.meter_rows:
            dims["meter"] = self.meter_rows
        if self.audio_pitch is not None:
            dims["audio_pitch"] = self.audio_pitch.out_dim
        if self.audio_meter is not None:
            dims["audio_meter"] = self.audio_meter.out_dim
        if self.late_text:
            dims["text"] = self.cfg.text_dim
        return dims

    def encode(self, batch: Mapping[str, torch.Tensor], parts: Optional[dict] = None
               ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Everything before the recurrence, and the clip-level (late) features.

        Returns:
            ``(seq, late)``: ``seq`` (B, T', D) with ``T' = out_frames(T)`` and
            ``D = fused_dim``: for each modality of ``sequence_modalities`` its block (zeroed
            when missing) followed by its 0/1 mask channel; ``late`` (B, late_dim) — the text
            projection and its mask channel (late text fusion), the pitch-class key scores and
            the standardised meter profile (both zeroed without notes), the audio key scores
            of the chroma (zeroed without the log-Mel) — or None when the
            model has no late stream. A modality whose key is absent from ``batch`` is missing
            for every clip (e.g. no lyrics at inference).

        ``parts``: when a dict is given, each stream of ``stream_dims()`` present in ``batch``
        adds ``parts[name] = (summary (B, dim), mask (B,))``, the mask after modality dropout
        (training uses them for per-stream auxiliary losses; inference never reads them).
        """
        masks = self.modality_masks(batch)
        if self.training:
            masks = self.drop_modalities(masks)
        ref = _reference(batch)
        B, T = ref.shape[0], ref.shape[-1]
        dilated = self.cfg.stem == "dilated"
        Tz = T if dilated else stem_frames(T, self.cfg.stem_stages)
        blocks, late = [], []
        for j, m in enumerate(self.modalities):
            mj = masks[:, j]
            if m == "text" and self.late_text:
                if "text" in batch:
                    z = self.stems[m](batch["text"].float())
                else:
                    z = ref.new_zeros(B, self.cfg.text_dim)
                late += [z * mj[:, None], mj[:, None]]
                if parts is not None and "text" in batch:
                    parts["text"] = (z, mj)
                continue
            if SERIES.get(m, m) not in batch:
                z = ref.new_zeros(B, Tz, self.block_widths[m])
            elif m == "text":
                z = self.stems[m](batch["text"].float())[:, None, :].expand(B, Tz, -1)
            else:
                raw = batch[SERIES[m]].float()
                if m == "symbolic":
                    raw = torch.nan_to_num(raw)
                    if self.training:
                        raw = self._augment_symbolic(raw)
                    if self.pitch is not None:
                        keys = _late_norm(self.pitch_norm, self.pitch(raw))
                        late.append(keys * mj[:, None])
                        if parts is not None:
                            parts["pitch"] = (keys, mj)
                    if self.meter_rows:
                        meter = _late_norm(self.meter_norm, raw[:, METER_START:].mean(dim=2))
                        late.append(meter * mj[:, None])
                        if parts is not None:
                            parts["meter"] = (meter, mj)
                x = self.norm(m, raw)
                if m == "symbolic" and self.meter_rows:
                    x = x[:, :METER_START]
                if m == "mel" and self.training:
                    x = self._augment_mel(x)
                if m == "mel" and self.flux is not None:
                    x = torch.cat([x, self.flux_norm(self.flux(raw))], dim=1)
                z = self.stems[m](x).transpose(1, 2)
                if parts is not None:
                    parts[m] = (torch.cat([z.mean(dim=1), z.amax(dim=1)], dim=1), mj)
            z = z * mj[:, None, None]
            blocks += [z, mj[:, None, None].expand(B, Tz, 1)]
        if "symbolic" in self.modalities and SERIES["symbolic"] not in batch:
            late.append(ref.new_zeros(B, (self.pitch.out_dim if self.pitch is not None else 0)
                                      + self.meter_rows))
        # the audio block closes the late block, key scores then meter (close_streams relies on it)
        if self.audio_pitch is not None:
            mj = masks[:, self.modalities.index("mel")]
            if "chroma" in batch and SERIES["mel"] in batch:
                keys = _late_norm(self.audio_pitch_norm, self.audio_pitch.scores(
                    chroma_profile(batch["chroma"].float())))
                late.append(keys * mj[:, None])
                if parts is not None:
                    parts["audio_pitch"] = (keys, mj)
            else:
                late.append(ref.new_zeros(B, self.audio_pitch.out_dim))
        if self.audio_meter is not None:  # after the audio key scores, last
            mj = masks[:, self.modalities.index("mel")]
            if SERIES["mel"] in batch:
                chroma = (batch["chroma"].float() if self.reads_chroma and "chroma" in batch
                          else None)
                beats = _late_norm(self.audio_meter_norm,
                                   self.audio_meter(batch[SERIES["mel"]].float(), chroma))
                late.append(beats * mj[:, None])
                if parts is not None:
                    parts["audio_meter"] = (beats, mj)
            else:
                late.append(ref.new_zeros(B, self.audio_meter.out_dim))
        seq = torch.cat(blocks, dim=2)
        if dilated and self.cfg.pool_stride > 1:
            # ceil(T / stride) steps, a trailing partial window averaged over the frames it
            # has (torch and ONNX Runtime's AveragePool agree: tests/test_onnx_export.py)
            seq = nn.functional.avg_pool1d(seq.transpose(1, 2), self.cfg.pool_stride,
                                           ceil_mode=True).transpose(1, 2)
        return seq, (torch.cat(late, dim=1) if late else None)

    def sequence_features(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The (B, T', D) sequence the recurrence reads (``encode(batch)[0]``)."""
        return self.encode(batch)[0]

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B, C)."""
        seq, late = self.encode(batch)
        return self.classifier(seq, late)

    def set_normalization(self, stats: Mapping[str, np.ndarray]) -> None:
        """Install training-split statistics from ``compute_norm_stats``."""
        self.norm.set_stats(stats)


def _late_norm(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """``bn(x)`` for a (B, K) clip-level stream; a training batch of one clip (the last batch
    of a split whose size is 1 modulo the batch size) is normalised with the running
    statistics, which a BatchNorm cannot estimate from one value per channel."""
    if bn.training and x.shape[0] == 1:
        return nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                        False, 0.0, bn.eps)
    return bn(x)


def batch_from_arrays(fs, rows: Optional[np.ndarray] = None) -> Dict[str, torch.Tensor]:
    """Torch batch dict (see module docstring) of ``fs`` rows (all rows when None).
    Masks that are None in ``fs`` are all-True where the modality exists."""
    def take(a):
        a = np.asarray(a)
        return torch.from_numpy(np.ascontiguousarray(a if rows is None else a[rows]))

    batch = {"mfcc": take(fs.mfcc).float(), "logmel": take(fs.logmel).float()}
    if getattr(fs, "chroma", None) is not None:
        batch["chroma"] = take(fs.chroma).float()
    n = batch["mfcc"].shape[0]
    for name in ("text", "symbolic"):
        arr = getattr(fs, name)
        if arr is None:
            continue
        batch[name] = take(arr).float()
        mask = getattr(fs, f"{name}_mask")
        batch[f"{name}_mask"] = torch.ones(n, dtype=torch.bool) if mask is None else take(mask)
    return batch
