"""Configuration dataclasses: the one source of defaults for the whole package.

Every setting that changes what a feature, a model or an engine computes lives here, is
serialised into checkpoints, caches and engine headers (``to_dict``/``from_dict``), and is
never repeated as a default elsewhere (the CLI reads its defaults from these classes). The
inference side's classes (``EngineConfig``, ``BuildConfig``, ``BatchConfig``, ``BenchConfig``)
live in ``config_engine.py`` and are re-exported here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Mapping, Optional, Tuple, Type, TypeVar

from .config_engine import (  # noqa: F401 (re-exported: the one place to import them from)
    BatchConfig, BenchConfig, BuildConfig, EngineConfig)

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    """Plain-JSON dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: Type[T], data: dict) -> T:
    """Build ``cls`` from a dict, ignoring unknown keys and restoring tuples. A field listed
    in the class's ``LEGACY`` (a ClassVar: the value of a field added after dicts of the class
    were stored) takes that value when the dict lacks it."""
    data = {**getattr(cls, "LEGACY", {}), **data}
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            v = data[f.name]
            if isinstance(v, list):
                v = tuple(v)
            kwargs[f.name] = v
    return cls(**kwargs)


@dataclass(frozen=True)
class AudioConfig:
    """How audio files are decoded into waveforms.

    Attributes:
        sample_rate: target rate in Hz; every file is resampled to it.
        max_duration_s: files longer than this are refused (``AudioTooLongError``).
        resample_quality: soxr quality recipe ("HQ", "VHQ", "MQ", "LQ", "QQ").
        clip_seconds: the model's window: training clips and inference windows are this long
            (a shorter waveform is looped to fill it, never padded with silence; a longer one
            is cut into windows whose scores are aggregated at inference).
    """

    sample_rate: int = 22050
    max_duration_s: float = 900.0
    resample_quality: str = "HQ"
    clip_seconds: float = 30.0


@dataclass(frozen=True)
class InputLimits:
    """What an input may ask of the machine: every parser checks these before it allocates.

    Audio is checked from the file's size and its container header before decoding (a FLAC
    whose STREAMINFO gives no length is counted frame by frame against ``max_seconds``);
    MIDI files are walked event by event before mido or pretty_midi see them; JSON (engine
    headers, ``checkpoint.json``) is size- and depth-checked; manifests and the files they
    name must be regular files under the byte limits (a FIFO or ``/dev/zero`` is refused, not
    read). Every violation raises a typed error naming the file and the field
    (``mmengine.errors.InputLimitError`` and its subclasses, or ``EngineFileError`` /
    ``CheckpointError`` / ``ManifestError`` for those files).

    Stored in engine headers (``"limits"``) and used by ``Engine``; a header's values must lie
    within ``LIMIT_CEILINGS`` (an engine file cannot lift them beyond that), and
    ``Engine.load(..., limits=...)`` overrides them.

    Attributes:
        max_file_bytes: size of one audio file.
        max_seconds: audio duration (the smaller of this and ``AudioConfig.max_duration_s``
            applies).
        min_sample_rate, max_sample_rate: a file's own rate, Hz (0 is always refused).
        max_channels: channels of an audio file.
        max_decoded_bytes: float32 samples of one file at its own rate and channel count
            (frames x channels x 4) held while decoding.
        max_text_bytes: UTF-8 bytes of one text (lyrics, title, ``lyrics_path`` file).
        max_midi_bytes: size of one MIDI file.
        max_midi_events: events (all tracks) of one MIDI file.
        max_midi_ticks: the last event's tick in any track.
        max_midi_beats: ticks / ticks-per-beat of the last event (length in beats: with
            ``max_midi_ticks`` it bounds pretty_midi's per-tick time table, which is built
            at a resolution of at most ``mmengine.features.midi.TABLE_TICKS`` ticks).
        max_json_bytes: an engine header or ``checkpoint.json``.
        max_json_depth: nesting of objects and arrays in such JSON.
        max_manifest_bytes: a manifest file.
        max_engine_bytes: an engine file (header + payload).
    """

    max_file_bytes: int = 1 << 30
    max_seconds: float = 900.0
    min_sample_rate: int = 1000
    max_sample_rate: int = 384000
    max_channels: int = 8
    max_decoded_bytes: int = 1 << 30
    max_text_bytes: int = 1 << 20
    max_midi_bytes: int = 4 << 20
    max_midi_events: int = 200_000
    max_midi_ticks: int = 1 << 31
    max_midi_beats: int = 100_000
    max_json_bytes: int = 64 << 20
    max_json_depth: int = 32
    max_manifest_bytes: int = 64 << 20
    max_engine_bytes: int = 4 << 30

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            top = LIMIT_CEILINGS[f.name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= top:
                raise ValueError(f"InputLimits.{f.name} must be a number in (0, {top:g}], "
                                 f"got {v!r}")
        if self.min_sample_rate > self.max_sample_rate:
            raise ValueError("InputLimits.min_sample_rate exceeds max_sample_rate")


#: the largest value any ``InputLimits`` field may take (also when read from a file)
LIMIT_CEILINGS = {
    "max_file_bytes": float(1 << 40), "max_seconds": 86400.0, "min_sample_rate": 768000,
    "max_sample_rate": 768000, "max_channels": 256, "max_decoded_bytes": float(1 << 40),
    "max_text_bytes": float(1 << 30), "max_midi_bytes": float(1 << 30),
    "max_midi_events": 100_000_000, "max_midi_ticks": float(1 << 40),
    "max_midi_beats": 10_000_000, "max_json_bytes": float(1 << 31), "max_json_depth": 256,
    "max_manifest_bytes": float(1 << 36), "max_engine_bytes": float(1 << 40),
}


@dataclass(frozen=True)
class FrontendConfig:
    """Log-Mel + MFCC parameters, every choice on which libraries disagree pinned.

    Equivalent librosa call (the parity target)::

        S = librosa.feature.melspectrogram(y=y, sr=sample_rate, n_fft=n_fft,
                hop_length=hop_length, win_length=n_fft, window="hann", center=True,
                pad_mode="constant", power=2.0, n_mels=n_mels, fmin=fmin, fmax=fmax,
                htk=False, norm="slaney")
        logmel = 10 * log10(maximum(S, amin))            # ref = 1.0, no top_db
        mfcc = scipy.fft.dct(logmel, type=2, norm="ortho", axis=-2)[:n_mfcc]
        # the pitch stream, when chroma_bins > 0 (needs center=True: same frames as the Mel)
        C = librosa.feature.chroma_stft(S=abs(librosa.stft(y, n_fft=chroma_n_fft,
                hop_length=hop_length, window="hann", center=True, pad_mode=pad_mode))
                ** chroma_power, sr=sample_rate, n_chroma=chroma_bins, tuning=0.0,
                norm=None, ctroct=chroma_ctroct, octwidth=chroma_octwidth, base_c=True)
        chroma = 10 * log10(maximum(C, amin))

    Attributes:
        sample_rate: Hz.
        n_fft: FFT size and window length (samples).
        hop_length: samples between frames. Frames = 1 + len // hop (centered).
        window: "hann" (periodic, as scipy/librosa ``get_window``).
        center: pad n_fft // 2 on both sides so frame t is centred on t * hop.
        pad_mode: "constant" (zeros, librosa >= 0.10 default; DALI ``reflect_padding=False``)
            or "reflect" (mirror without repeating the edge sample, as numpy/DALI).
        power: 2.0 = power spectrum.
        n_mels: Mel bands.
        fmin, fmax: band edges in Hz (fmax None = Nyquist).
        mel_scale: "slaney" (librosa default, linear below 1 kHz) or "htk".
        mel_norm: "slaney" (area normalisation, librosa default) or None.
        amin: power floor before the log: dB floor = 10*log10(amin / db_ref) = -100 dB,
            absolute (no per-clip ``top_db``; DALI: ``cutoff_db`` = that floor).
        db_ref: reference power for 0 dB (fixed, not the clip max).
        n_mfcc: DCT-II (orthonormal) coefficients kept from the log-Mel (dB) spectrum.
        chroma_bins: pitch-class bins of the chroma stream ("chroma", dB): 0 = none (the
            design before the pitch stream; configs stored before it read as 0:
            ``FrontendConfig.LEGACY``), 12 = semitones. Bin 0 is C; tuning 0 (A = 440 Hz):
            the built-in renders are in tune.
        chroma_n_fft: FFT size of the chroma stream: 8192 samples (372 ms, 2.7 Hz bins at
            22.05 kHz) resolves semitones from ~65 Hz (C2, 3.9 Hz apart); the Mel's 2048
            would blur every semitone below ~180 Hz.
        chroma_power: 1 = magnitude (default), 2 = power spectrum into the chroma filter
            bank. librosa's ``chroma_stft`` defaults to 2; magnitude was chosen on the
            ``vocal`` validation split, where a logistic regression on the clip's key
            scores reached 0.922 accuracy with magnitude and 0.863 with power (102 clips;
            ``cd bench && python chroma_probe_variants.py``; docs/results.md).
        chroma_ctroct, chroma_octwidth: librosa's octave weighting of the chroma filter
            bank: a Gaussian over octaves centred on ``chroma_ctroct`` octaves above A0
            (27.5 Hz; octave 5 = 880 Hz) with ``chroma_octwidth`` octaves of standard
            deviation; ``chroma_octwidth=None`` weights every octave alike.
    """

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    window: str = "hann"
    center: bool = True
    pad_mode: str = "constant"
    power: float = 2.0
    n_mels: int = 128
    fmin: float = 0.0
    fmax: Optional[float] = None
    mel_scale: str = "slaney"
    mel_norm: Optional[str] = "slaney"
    amin: float = 1e-10
    db_ref: float = 1.0
    n_mfcc: int = 20
    chroma_bins: int = 12
    chroma_n_fft: int = 8192
    chroma_power: float = 1.0
    chroma_ctroct: float = 5.0
    chroma_octwidth: Optional[float] = 2.0
    #: fields added later: a stored config without them is one from before the pitch stream
    LEGACY: ClassVar[dict] = {"chroma_bins": 0}

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for a waveform of ``n_samples`` samples."""
        if self.center:
            return 1 + n_samples // self.hop_length
        return max(0, 1 + (n_samples - self.n_fft) // self.hop_length)


@dataclass(frozen=True)
class TextConfig:
    """Bag-of-words / TF-IDF settings (scikit-learn ``TfidfVectorizer`` semantics).

    Attributes:
        max_features: vocabulary size cap (most frequent terms in the training split).
        min_df: minimum document frequency (count) for a term.
        ngram_max: word n-grams 1..ngram_max.
        sublinear_tf: 1 + log(tf) instead of raw counts.
        use_idf: multiply by smoothed idf (False = plain normalised bag of words).
        lowercase: lowercase before tokenising.
        norm: "l2" row normalisation (or None).
    """

    max_features: int = 2000
    min_df: int = 1
    ngram_max: int = 1
    sublinear_tf: bool = True
    use_idf: bool = True
    lowercase: bool = True
    norm: Optional[str] = "l2"


@dataclass(frozen=True)
class SplitConfig:
    """Stratified, seeded train/validation/test split (grouped when a group key exists)."""

    ratios: Tuple[float, float, float] = (0.70, 0.15, 0.15)
    seed: int = 0


#: modality names a model can use, in their fixed concatenation order
MODALITIES = ("mfcc", "mel", "text", "symbolic")
#: the sizes a model is built with (``models.build_model``), stored in checkpoints and engines
DIM_KEYS = ("n_mfcc", "n_mels", "text_dim", "symbolic_dim", "n_classes", "multilabel")
#: model sizes added later, and their value for models stored before them
OPTIONAL_DIMS = {"n_chroma": 0}
#: modality -> the names of its arrays in a model's inputs (batch dicts, engine io, ONNX)
MODALITY_INPUTS = {"mfcc": ("mfcc",), "mel": ("logmel",), "text": ("text", "text_mask"),
                   "symbolic": ("symbolic", "symbolic_mask")}
#: the order of those arrays in every input list
INPUT_ORDER = ("mfcc", "logmel", "chroma", "text", "text_mask", "symbolic", "symbolic_mask")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the fusion model and of the CNN baseline.

    The fusion model (``arch="fusion"``) has two stem designs:

    * ``stem="dilated"`` (default): every time-series modality goes through a ``DilatedStem``
      at the full frame rate (43 frames/s; residual dilated convolutions whose receptive field,
      129 frames ≈ 3.0 s with the default dilations, covers a bar), the log-Mel stem also
      reading the ``flux_bands``-band spectral flux (the rhythm stream, computed in the model
      from the log-Mel); the per-frame blocks and one 0/1 mask channel per modality are
      concatenated (feature-level fusion) and average-pooled by ``pool_stride`` into the
      recurrence. Clip-level streams join after the recurrence's pooling ("late"): the TF-IDF
      projection (``text_fusion="late"``), the transposition-invariant pitch-class key
      scores of the notes (``pitch_templates``), the notes' tempo-free meter profile
      (``meter_profile``) and the same key scores of the audio's chroma, the pitch stream of
      the front end (``audio_pitch_templates``; what a user without MIDI files has).
    * ``stem="strided"`` (the first design, the paper's per-frame early fusion): one Conv1d stem
      of ``stem_stages`` stride-2 stages per modality (``T' = ceil(T / 2**stem_stages)``), the
      TF-IDF vector broadcast over every step. Checkpoints written before the dilated design
      rebuild as this one (``LEGACY_MODEL_DEFAULTS``).

    Every default departs from the first design only with a measured reason: docs/results.md
    ("Choosing the default model") holds the validation figures of each choice.

    Attributes:
        arch: "fusion" (the paper's feature-level fusion RNN) or "cnn" (2D CNN on the log-Mel).
        modalities: subset of ``MODALITIES`` the model uses (ablations).
        cell: recurrent cell, "lstm" (paper), "gru", "rnn" (plain tanh RNN baseline) or
            "none" (no recurrence: the feature-matched temporal-CNN baseline ``tcn``).
        hidden_size: recurrent units per layer (H).
        num_layers: stacked recurrent layers (L).
        dropout: dropout before the head (paper: 0.5).
        rnn_dropout: dropout between recurrent layers (training only).
        pooling: "last" (final hidden state of the top layer, paper), "mean" over time, or
            "meanmax" (mean and max over time, concatenated: 2H). Default "meanmax": the labels
            are clip-level properties (meter, mode) that no single step holds.
        stem: "dilated" or "strided" (see above).
        stem_stages: stride-2 stages of the strided stem.
        dilations: dilations of the dilated stem's residual blocks.
        pool_stride: average pooling between the dilated stems and the recurrence.
        flux_bands: bands of the spectral-flux rhythm stream (0 = none).
        text_fusion: "late" (after pooling) or "early" (broadcast over every step).
        pitch_templates: key templates of the pitch-class head (0 = none).
        audio_pitch_templates: key templates of the audio pitch-class head, which reads the
            front end's chroma (``FrontendConfig.chroma_bins``) and joins late, masked with the
            log-Mel (0 = none; the head exists only when the data has a 12-bin chroma).
        audio_pitch_gain: the scale of the audio key scores (the weight of their BatchNorm)
            when the second training stage opens them (``close_streams``): their head
            columns start at zero there, and Adam moves a weight by about the learning rate
            per step, so a larger scale lets the audio path reach the logits in fewer steps
            (``vocal`` seed 0, validation macro-F1 without the notes 4 epochs into the second
            stage: 0.891 with 10, 0.329 with 1; 0.665 after 16 epochs with 1).
        audio_meter_templates: tempo-invariant templates of the audio meter head
            (``models.streams.AudioMeterHead``; 0 = no head): the log-lag profile of the
            onset envelope's autocorrelation and of the chroma's self-similarity (96 values)
            and the templates' scores join late, masked with the log-Mel, opened at
            ``audio_pitch_gain`` in stage 2 like the audio key scores. What a user without
            notes has for a meter (``bench/audio_meter_probe.py``: a random forest on the
            profile alone, folk validation 0.850 without notes). Default 8, against 0 (the
            previous default), 3 seeds on validation: folk 0.912 ± 0.009 with every modality
            (0.900 ± 0.015) and 0.821 ± 0.025 without the notes (0.523 ± 0.027); vocal
            0.944 ± 0.011 (0.948 ± 0.015), without the notes 0.935 (docs/results.md).
        mfcc_channels, mel_channels, symbolic_channels: per-frame widths of the stems' outputs.
        text_dim: width of the dense TF-IDF projection.
        modality_dropout: per-sample probability of dropping each time-series modality during
            training (never all of a sample's present modalities at once).
        text_dropout: the same for the text (strong: a title can act as a tune ID).
        symbolic_dropout: the same for the notes (strong: with the notes present the audio
            adds little, so without strong dropout a model would never learn to do without
            them, which is what a user without MIDI files needs).
        spec_mask_bands: training-time SpecAugment: one run of up to this many log-Mel bands
            per clip set to the training mean (0 = off).
        pitch_rotation: training-time transposition: the 12 pitch-class rows of the notes are
            rolled by a random number of semitones per clip.
        meter_profile: the notes' meter profile (symbolic rows 18–65: tempo-free melodic
            and rhythmic self-similarity at 1–24 steps of the median inter-onset interval)
            joins the late streams (standardised); the symbolic stem then reads only the
            time-varying rows 0–17.
        cnn_channels: channels of the CNN baseline's conv blocks (each block halves both axes).
        cnn_stride: (frequency, time) stride of the CNN's first convolution.
    """

    arch: str = "fusion"
    modalities: Tuple[str, ...] = MODALITIES
    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 2
    dropout: float = 0.5
    rnn_dropout: float = 0.2
    pooling: str = "meanmax"
    stem: str = "dilated"
    stem_stages: int = 2
    dilations: Tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    pool_stride: int = 2
    flux_bands: int = 8
    text_fusion: str = "late"
    pitch_templates: int = 8
    audio_pitch_templates: int = 8
    audio_pitch_gain: float = 10.0
    audio_meter_templates: int = 8
    mfcc_channels: int = 32
    mel_channels: int = 64
    symbolic_channels: int = 32
    text_dim: int = 32
    modality_dropout: float = 0.15
    text_dropout: float = 0.5
    symbolic_dropout: float = 0.5
    spec_mask_bands: int = 16
    pitch_rotation: bool = True
    meter_profile: bool = True
    cnn_channels: Tuple[int, ...] = (16, 32, 64, 64)
    cnn_stride: Tuple[int, int] = (2, 4)


#: values of the fields added with the dilated design, for configs stored before it existed
LEGACY_MODEL_DEFAULTS = {"stem": "strided", "pool_stride": 1, "flux_bands": 0,
                         "text_fusion": "early", "pitch_templates": 0, "text_dropout": None,
                         "spec_mask_bands": 0, "pitch_rotation": False, "pooling": "last",
                         "symbolic_channels": 16, "meter_profile": False,
                         "symbolic_dropout": None, "audio_pitch_templates": 0,
                         "audio_meter_templates": 0}
#: legacy fields whose missing value is the stored ``modality_dropout``
_DROPOUTS_FROM_MODALITY = ("text_dropout", "symbolic_dropout")


def first_design(**overrides) -> ModelConfig:
    """The first fusion design (strided stems, early text, last-step pooling, no flux, no
    pitch head, no augmentation: ``LEGACY_MODEL_DEFAULTS``) with ``overrides``."""
    legacy = {k: v for k, v in LEGACY_MODEL_DEFAULTS.items() if k not in _DROPOUTS_FROM_MODALITY}
    p = overrides.get("modality_dropout", ModelConfig.modality_dropout)
    return ModelConfig(**{**legacy, "symbolic_dropout": p, **overrides})


#: the audio meter head (``models.streams.AudioMeterHead``): lags in frames (93 ms to 4.5 s at
#: 43 frames/s: from one fast note to two bars of a slow slip jig), read at ``AUDIO_METER_BINS``
#: log-spaced points, where a change of tempo is a shift along the axis; each template spans
#: ``AUDIO_METER_WIDTH`` of them at ``AUDIO_METER_SHIFTS`` positions (8 bins ≈ 0.9 octave of
#: tempo)
AUDIO_METER_LAGS = (4, 192)
AUDIO_METER_BINS = 48
AUDIO_METER_SHIFTS = 9
AUDIO_METER_WIDTH = AUDIO_METER_BINS - AUDIO_METER_SHIFTS + 1


def log_lag_weights(lag_min: int = AUDIO_METER_LAGS[0], lag_max: int = AUDIO_METER_LAGS[1],
                    bins: int = AUDIO_METER_BINS):
    """``(lags, W)``: the integer lags a log-lag curve reads and the (len(lags), bins)
    linear-interpolation weights, so that ``curve_at(lags) @ W`` is ``np.interp`` of the curve
    at ``bins`` lags spaced evenly in log from ``lag_min`` to ``lag_max``."""
    import numpy as np

    pos = np.exp(np.linspace(np.log(lag_min), np.log(lag_max), bins))
    pos[-1] = lag_max  # exp(log(x)) may round below x
    lo = np.minimum(np.floor(pos).astype(np.int64), lag_max)
    hi = np.minimum(lo + 1, lag_max)
    lags = np.unique(np.concatenate([lo, hi]))
    w = np.zeros((len(lags), bins), np.float64)
    frac = pos - lo
    np.add.at(w, (np.searchsorted(lags, lo), np.arange(bins)), 1.0 - frac)
    np.add.at(w, (np.searchsorted(lags, hi), np.arange(bins)), frac)
    return lags, w


def uses_chroma(cfg: "ModelConfig", dims: Mapping) -> bool:
    """Whether a model of ``cfg`` and sizes ``dims`` reads the chroma pitch stream (its audio
    pitch-class head or its audio meter head exists): the fusion design with the dilated
    stem, the log-Mel among its modalities, ``audio_pitch_templates > 0`` or
    ``audio_meter_templates > 0``, and a 12-bin chroma in the data."""
    return (cfg.arch == "fusion" and cfg.stem == "dilated" and "mel" in cfg.modalities
            and int(dims.get("n_mels", 0)) > 0
            and (cfg.audio_pitch_templates > 0 or cfg.audio_meter_templates > 0)
            and int(dims.get("n_chroma", 0)) == 12)


def model_config_from_stored(data: dict) -> ModelConfig:
    """``ModelConfig`` from a stored dict (checkpoint, engine header). Fields missing from an
    older dict take ``LEGACY_MODEL_DEFAULTS`` (the design that wrote it), not today's defaults;
    a missing ``text_dropout`` or ``symbolic_dropout`` takes the stored ``modality_dropout``."""
    data = dict(data)
    for key, value in LEGACY_MODEL_DEFAULTS.items():
        if key not in data:
            data[key] = (data.get("modality_dropout", 0.15) if key in _DROPOUTS_FROM_MODALITY
                         else value)
    return from_dict(ModelConfig, data)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (paper: Adam, lr 1e-3, batch 64, up to 100 epochs).

    Defaults keep the paper's Adam family, learning rate, batch and epoch cap (60 ≤ 100); the
    departures (decoupled weight decay, warm-up + cosine decay, class weights, random crops,
    two stages: the notes alone for 36 epochs, then every modality for 24 at lr 3e-4) are each
    chosen on validation macro-F1 (docs/results.md, "Choosing the default model"): trained
    jointly from the start, the fused model fitted its training clips through the audio and
    text and scored below the notes alone (validation, seed 0: folk 0.887 vs 0.903, vocal
    0.863 vs 0.961); in two stages it reached 0.899 and 0.941.

    Attributes:
        lr: peak learning rate.
        batch_size: examples per step.
        max_epochs: epoch cap.
        patience: epochs without a better validation macro-F1 before stopping.
        optimizer: "adamw" (decoupled weight decay) or "adam" (L2 penalty, the first design).
        weight_decay: decay coefficient of the optimizer.
        schedule: "cosine" (linear warm-up for ``warmup_frac`` of the steps of ``max_epochs``,
            then cosine decay to 0) or "constant".
        warmup_frac: see ``schedule``.
        class_weights: weight the loss by inverse training class frequency (single-label).
        crop_seconds: train on random crops of this length (0 = whole clips); validation,
            test and inference always see whole clips.
        grad_clip: max global gradient norm (0 = no clipping).
        aux_weight: weight of the per-stream auxiliary losses (training only): each stream of
            the fusion model (every time-series stem's mean/max summary, the key scores, the
            late text) gets its own dropout + linear head, and the mean of their losses over
            the clips that have the stream is added to the fused head's loss with this weight
            (0 = off). The heads are not part of the model: engines never see them.
        select_without_notes: weight ``w`` of the validation macro-F1 *without the notes*
            in the best-epoch selection of a model that reads the notes and something else:
            the epoch kept maximises ``(1 - w) · F1(every modality) + w · F1(no notes)``
            (both recorded per epoch in the history). Most users have audio and no MIDI
            file: selected on the first alone (``w = 0``, the design before), the fused
            model kept the first epoch of stage 2, before its audio path had learned
            anything, and scored 0.329 on ``vocal`` validation without the notes (chance
            0.5); the default 0.5 serves both. Models without the notes: plain macro-F1.
        ema_decay: keep an exponential moving average of the weights (decay per step; 0 =
            off); validation scores, best-epoch selection and the checkpoint use the average.
        stage1_frac: train in two stages (0 = one stage): the first
            ``round(stage1_frac * max_epochs)`` epochs see only ``stage1_modalities`` (the
            clips that have one of them; the other modalities are left out of the batches, so
            their stems cost nothing), then the weights through which the other modalities
            reach the logits are zeroed (``FusionLSTM.close_streams``: the model's outputs are
            unchanged) and the rest of the epochs train on every modality with a fresh
            optimizer and schedule. Best-epoch selection and early stopping start at the
            switch: the model kept is always a model of every modality. No effect on models
            whose modalities are all (or none) in ``stage1_modalities``.
        stage1_modalities: the modalities of stage 1.
        stage2_lr: peak learning rate of stage 2 (0 = ``lr``).
        seed: seeds initialisation, shuffling, crops, dropout and augmentation.
        num_threads: torch intra-op threads (0 = leave torch's setting alone).
    """

    lr: float = 1e-3
    batch_size: int = 64
    max_epochs: int = 60
    patience: int = 15
    optimizer: str = "adamw"
    weight_decay: float = 1e-2
    schedule: str = "cosine"
    warmup_frac: float = 0.1
    class_weights: bool = True
    crop_seconds: float = 10.0
    grad_clip: float = 5.0
    aux_weight: float = 0.0
    select_without_notes: float = 0.5
    ema_decay: float = 0.0
    stage1_frac: float = 0.6
    stage1_modalities: Tuple[str, ...] = ("symbolic",)
    stage2_lr: float = 3e-4
    seed: int = 0
    num_threads: int = 2


@dataclass(frozen=True)
class DistConfig:
    """Settings of data-parallel training under torchrun (``mmengine.distributed``); not part
    of a run's ``TrainConfig``: a run may resume on another number of processes.

    Attributes:
        backend: "auto" (gloo: training runs on the CPU; NCCL is torch's choice for CUDA
            tensors), "gloo" or "nccl"; the environment variable ``MMENGINE_DIST_BACKEND``
            overrides it.
        timeout_s: how long a collective step waits for the other ranks before failing.
        threads_per_process: torch threads of each process that ``mmengine train --nproc N``
            starts when ``--threads`` is not given (0: the cores divided by N, at least 1).
    """

    backend: str = "auto"
    timeout_s: float = 1800.0
    threads_per_process: int = 0


#: values of the fields added with the dilated design, for configs stored before it existed
LEGACY_TRAIN_DEFAULTS = {"optimizer": "adam", "schedule": "constant", "class_weights": False,
                         "crop_seconds": 0.0, "warmup_frac": 0.0, "stage1_frac": 0.0,
                         "max_epochs": 40, "select_without_notes": 0.0}


@dataclass(frozen=True)
class CorpusConfig:
    """Defaults of the built-in data sets: ``mmengine data build`` /
    ``mmengine.data.corpus.build_dataset``, and the data set that ``mmengine train`` /
    ``experiment`` (``mmengine.train`` / ``experiment``) use when none is named.

    Attributes:
        task: the built-in data set (a key of ``mmengine.data.corpus.TASKS``).
        seed: render and split seed of a build (an integer).
        train_renderings: extra renderings of each tune of the training split (a count; 0 =
            none, and a rebuild removes those of an earlier build).
    """

    task: str = "folk"
    seed: int = 0
    train_renderings: int = 0


@dataclass(frozen=True)
class FeatureLoadConfig:
    """Defaults of the training side's feature loading: ``mmengine features`` /
    ``mmengine.load_features`` (so ``train``, ``evaluate`` and ``experiment``),
    ``features.dataset.build_feature_set`` and ``features.cache.compute_or_load_audio_features``.

    Attributes:
        frontend: the front end that computes the cached audio features: "auto" (default:
            "native" where the C++ extension is built and supports the config, else
            "reference": the engine's own default, so a model trains on the features it is
            served), "reference" (float64, the parity target), "native" or "dali"
            (``features.frontend``). The cache is keyed by the name "auto" resolves to.
            The native front end matches the reference within ~1e-4 dB (log-Mel) and
            5e-5 dB (chroma) on broadband audio (tests/test_frontend_native.py,
            tests/test_chroma.py) and computes a 30 s clip's features ~10x faster.
        text_field: the record field that becomes the text: "lyrics", "title", None (no text)
            or "auto" (lyrics if any record has them, else titles; ``choose_text_field``).
        symbolic: compute the notes' features where the manifest names MIDI files (a flag).
        workers: audio decoding threads (a count).
    """

    frontend: str = "auto"
    text_field: Optional[str] = "auto"
    symbolic: bool = True
    workers: int = 1


@dataclass(frozen=True)
class ExperimentConfig:
    """Defaults of ``mmengine experiment`` / ``mmengine.experiment``
    (``evaluation.run_experiment``).

    Attributes:
        seeds: training seeds (integers): every model is trained once per seed; the split is
            fixed by the data.
        models: the models compared (names of ``evaluation.TORCH_VARIANTS`` and
            ``SKLEARN_VARIANTS``), in the comparison's order.
    """

    seeds: Tuple[int, ...] = (0, 1, 2)
    models: Tuple[str, ...] = ("fusion", "svm", "rf", "svm_streams", "rf_streams", "cnn", "tcn",
                               "rnn", "only_audio", "only_text", "only_symbolic")
