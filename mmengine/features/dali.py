"""NVIDIA DALI front end: decode → resample → spectrogram → mel_filter_bank → to_decibels → mfcc.

Computes the reference's features (:mod:`mmengine.features.reference`, i.e. librosa with
:class:`~mmengine.config.FrontendConfig` pinned) with DALI's CPU operators (``device="cpu"``,
no GPU needed) or its GPU operators (``device="gpu"``, needs a CUDA device). Every DALI
default that differs from the reference is set explicitly (DALI 2.4, measured where noted):

=========================  ==============================  ====================================
operator / argument        DALI default                    pinned to
=========================  ==============================  ====================================
spectrogram window_fn      Hann shifted by half a sample,  periodic Hann of n_fft
                           0.5-0.5cos(2π(k+½)/N) (measured) (``reference.hann_window``)
window_length / nfft       512 / window_length             n_fft / n_fft
window_step                256                             hop_length
center_windows             True                            cfg.center
reflect_padding            True (mirror)                   False for pad_mode "constant" (zeros)
power                      2                               cfg.power (DALI: 1 or 2 only)
layout                     "ft"                            "ft" (frequency-major, as reference)
mel sample_rate            44100                           cfg.sample_rate
mel nfilter                128                             cfg.n_mels
mel freq_low / freq_high   0 / 0 (= sample_rate/2)         cfg.fmin / cfg.fmax or sample_rate/2
mel_formula                "slaney"                        cfg.mel_scale
mel normalize              True (Slaney area)              cfg.mel_norm == "slaney"
to_decibels multiplier     10                              10 (power spectrum)
to_decibels reference      0 (= each clip's maximum)       cfg.db_ref (fixed)
to_decibels cutoff_db      -200 (relative to reference)    10*log10(amin / db_ref): the floor
                                                           10*log10(amin) - 10*log10(db_ref)
mfcc n_mfcc                20                              cfg.n_mfcc
mfcc dct_type / normalize  2 / False (unscaled DCT)        2 / True (orthonormal, scipy "ortho")
mfcc lifter / axis         0 / 0                           0 / 0 (the Mel axis of "ft")
decoders.audio downmix     False (interleaved channels)    True (mean of channels, as to_mono)
decoders.audio sample_rate 0 (file's rate)                 left at the file's rate; resampled by
                                                           audio_resample after an anti-alias
                                                           FIR (below)
audio_resample quality     50 (16 sinc lobes)              ``resample_quality`` (100: 64 lobes)
=========================  ==============================  ====================================

Resampling: DALI 2.4's resampler (``audio_resample`` and ``decoders.audio(sample_rate=...)``)
does not band-limit when downsampling (measured on CPU: a 15 kHz tone at 44.1 kHz comes out of
a 22.05 kHz conversion as a full-level 7.05 kHz tone, white noise gains 3 dB in every band, at
every quality). :func:`antialias_kernel` therefore low-passes the decoded signal first
(``fn.filter`` with a Kaiser-windowed sinc shaped like soxr's "HQ" response: -6 dB at 95.6 % of
the lower Nyquist frequency, >= 100 dB down at it), then ``audio_resample`` interpolates. The
reference path (``mmengine.data.audio.load_audio``: soxr "HQ") and this one then differ in the
transition band (the top one or two Mel bands when downsampling), in quiet bins more than
~60 dB under the clip's peak (DALI's interpolation residue, non-integer ratios and upsampling)
and at the clip's ends (each resampler pads differently). Peaks above 1.0 are scaled down to
1.0 after resampling, as ``load_audio``'s ``peak_safe`` does.

DALI's audio decoder reads WAV, FLAC and OGG but not MP3: :meth:`DaliFrontend.from_files`
refuses MP3 with ``AudioUnsupportedFormatError``; decode those elsewhere
(``mmengine.data.audio.load_audio``) and use :meth:`DaliFrontend.from_arrays`.

Torch outputs (:meth:`DaliFrontend.from_arrays_torch`, :meth:`DaliFrontend.from_files_torch`,
:meth:`DaliFrontend.from_arrays_padded`, :meth:`DaliFrontend.from_files_padded`: DLPack views of
DALI's buffers on its device, with their stream safety and buffer lifetime) are described and
implemented in :mod:`mmengine.features.dali_torch`, whose ``DaliTorchOutputs`` is
``DaliFrontend``'s base class.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

from .._ext import require
from ..config import FrontendConfig
from ..errors import (
    AudioCorruptError,
    AudioEmptyError,
    AudioMissingError,
    AudioUnsupportedFormatError,
    BackendUnavailableError,
    UnsupportedSettingsError,
)
from .base import Frontend, check_waveforms
from .reference import check_config, hann_window
from .dali_torch import (  # noqa: F401 (re-exported: tests and callers import them here)
    DaliTorchOutputs, _is_gpu, dali_to_torch, pad_features)

#: anti-alias FIR: -6 dB point and transition width as fractions of the lower Nyquist
#: frequency, stop-band attenuation in dB (soxr "HQ", 44.1 -> 22.05 kHz, measured: -1.2 dB at
#: 0.943, -3.8 dB at 0.952, -32 dB at 0.980, -99 dB at 0.998 of the target Nyquist)
AA_CUTOFF, AA_WIDTH, AA_ATTENUATION_DB = 0.956, 0.073, 100.0
#: why a config with the chroma pitch stream is refused (DALI has no operator that applies an
#: arbitrary filter bank: fn.mel_filter_bank builds its own triangles)
UNSUPPORTED_CHROMA = ("the DALI front end does not compute the chroma pitch stream "
                      "(FrontendConfig.chroma_bins > 0): DALI has no operator for its filter "
                      "bank; use the 'native', 'reference' or 'torch' front end")


def antialias_kernel(sr_in: float, sr_out: float) -> np.ndarray:
    """Low-pass FIR to apply at ``sr_in`` before resampling to ``sr_out``, ``(taps,)`` float32.

    ``[1.0]`` (a no-op) when the rates are equal; else a linear-phase Kaiser-windowed sinc
    (odd length: no delay when centred, unit gain at DC) whose band edge sits, like soxr's,
    relative to the lower of the two Nyquist frequencies: it removes what would alias when
    downsampling, and when upsampling the top of the input band that soxr "HQ" also rolls off."""
    from scipy.signal import firwin, kaiserord

    if sr_out == sr_in:
        return np.ones(1, np.float32)
    nyq_in, nyq_low = sr_in / 2.0, min(sr_in, sr_out) / 2.0
    taps, beta = kaiserord(AA_ATTENUATION_DB, AA_WIDTH * nyq_low / nyq_in)
    taps |= 1
    h = firwin(taps, AA_CUTOFF * nyq_low, window=("kaiser", beta), fs=sr_in)
    return h.astype(np.float32)


def _dali_gpu_count() -> int:
    try:
        from nvidia.dali.backend import GetCUDADeviceCount
    except ImportError:
        return 0
    try:
        return int(GetCUDADeviceCount())
    except RuntimeError:
        return 0


def _dali_reason(exc: Exception) -> str:
    """The decoder's own message out of DALI's multi-line pipeline error."""
    text = str(exc)
    tail = text.split("encountered:", 1)[-1]
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    return lines[0] if lines else text.strip()


def _host_samples(tensor_list, n: int) -> List[np.ndarray]:
    """Per-sample numpy copies of a DALI TensorList (GPU lists are copied to the host first)."""
    if _is_gpu(tensor_list):
        tensor_list = tensor_list.as_cpu()
    return [np.array(tensor_list.at(j)) for j in range(n)]


class DaliFrontend(DaliTorchOutputs, Frontend):
    """Batched DALI front end with the reference's parameters.

    Args:
        cfg: front-end settings (``window`` "hann", ``pad_mode`` "constant"/"reflect",
            ``power`` 1 or 2).
        device: "cpu" (DALI CPU operators, no GPU needed) or "gpu" (decode and resampling on
            the CPU, spectrogram to MFCC on GPU 0).
        batch_size: most clips per DALI iteration (a last, smaller batch is fine).
        num_threads: DALI CPU worker threads.
        resample_quality: ``audio_resample`` quality, 0-100 (files not at ``cfg.sample_rate``).

    Outputs are lists of numpy dicts ``{"logmel": (n_mels, frames), "mfcc": (n_mfcc, frames)}``
    (float32), ``frames = cfg.n_frames(n)`` for a clip of ``n`` samples at ``cfg.sample_rate``
    (:meth:`from_arrays`, :meth:`from_files`). The same features as torch tensors that stay on
    the device DALI computed them on (:attr:`torch_device`; DLPack, no host round trip):
    :meth:`from_arrays_torch`, :meth:`from_files_torch` (per clip) and :meth:`from_arrays_padded`,
    :meth:`from_files_padded` (one ``(B, F, T_max)`` batch with ``lengths``).

    Raises:
        OptionalDependencyError: DALI is not installed.
        BackendUnavailableError: ``device="gpu"`` without a CUDA device DALI can use.
    """

    name = "dali"
    padded_tensors = True  # from_arrays_padded (DaliTorchOutputs): one padded torch batch

    def __init__(self, cfg: FrontendConfig = FrontendConfig(), *, device: str = "cpu",
                 batch_size: int = 8, num_threads: int = 2, resample_quality: float = 100.0):
        require("dali")
        check_config(cfg)
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', not {device!r}")
        if device == "gpu" and _dali_gpu_count() == 0:
            raise BackendUnavailableError("DALI device='gpu' needs a CUDA device, and DALI sees "
                                          "none; use device='cpu'")
        if cfg.power not in (1.0, 2.0):
            raise ValueError(f"DALI's spectrogram supports power 1 or 2, not {cfg.power}")
        if cfg.chroma_bins:
            raise UnsupportedSettingsError(UNSUPPORTED_CHROMA)
        if batch_size < 1 or not 0.0 <= resample_quality <= 100.0:
            raise ValueError("batch_size must be >= 1 and resample_quality in [0, 100]")
        self.cfg, self.device = cfg, device
        self.batch_size, self.num_threads = int(batch_size), int(num_threads)
        self.resample_quality = float(resample_quality)
        self._pipes: Dict[str, object] = {}

    # ---------------------------------------------------------------- graph
    def _features(self, audio):
        """DALI nodes: mono float32 audio (n,) → log-Mel (n_mels, T), MFCC (n_mfcc, T)."""
        import nvidia.dali.fn as fn

        c = self.cfg
        if self.device == "gpu":
            audio = audio.gpu()
        spec = fn.spectrogram(
            audio, nfft=c.n_fft, window_length=c.n_fft, window_step=c.hop_length,
            window_fn=hann_window(c.n_fft).tolist(), center_windows=c.center,
            reflect_padding=c.pad_mode == "reflect", power=int(c.power), layout="ft")
        mel = fn.mel_filter_bank(
            spec, sample_rate=float(c.sample_rate), nfilter=c.n_mels, freq_low=float(c.fmin),
            freq_high=float(c.fmax if c.fmax is not None else c.sample_rate / 2.0),
            mel_formula=c.mel_scale, normalize=c.mel_norm == "slaney")
        db = fn.to_decibels(mel, multiplier=10.0, reference=float(c.db_ref),
                            cutoff_db=10.0 * math.log10(c.amin / c.db_ref))
        mfcc = fn.mfcc(db, n_mfcc=c.n_mfcc, dct_type=2, normalize=True, lifter=0.0, axis=0)
        return db, mfcc

    def _decode(self):
        """DALI nodes: encoded bytes → mono float32 at cfg.sample_rate, its decoded rate, length."""
        import nvidia.dali.fn as fn
        import nvidia.dali.math as dmath
        import nvidia.dali.types as types

        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        kernel = fn.external_source(name="kernel", dtype=types.FLOAT, ndim=2)
        audio, rate = fn.decoders.audio(encoded, downmix=True, dtype=types.FLOAT)
        audio = fn.reshape(audio, shape=[1, -1], layout="HW")
        audio = fn.filter(audio, kernel, border="constant")
        audio = fn.reshape(audio, shape=[-1], layout="")
        audio = fn.audio_resample(audio, in_rate=rate, out_rate=float(self.cfg.sample_rate),
                                  quality=self.resample_quality)
        peak = fn.reductions.max(dmath.abs(audio))
        audio = audio / dmath.max(peak, 1.0)
        return audio, rate, audio.shape(dtype=types.INT64)

    def _pipe(self, kind: str):
        if kind not in self._pipes:
            import nvidia.dali.fn as fn
            import nvidia.dali.types as types
            from nvidia.dali import pipeline_def

            @pipeline_def(batch_size=self.batch_size, num_threads=self.num_threads,
                          device_id=0 if self.device == "gpu" else None, exec_dynamic=True,
                          prefetch_queue_depth=1)
            def graph():
                if kind == "files":
                    audio, rate, length = self._decode()
                    return (*self._features(audio), rate, length)
                return self._features(fn.external_source(name="audio", dtype=types.FLOAT, ndim=1))

            pipe = graph()
            pipe.build()
            self._pipes[kind] = pipe
        return self._pipes[kind]

    def _execute(self, kind: str, feeds: Dict[str, list]) -> tuple:
        """One DALI iteration → its output TensorLists (GPU features stay on the device)."""
        pipe = self._pipe(kind)
        try:
            for name, data in feeds.items():
                pipe.feed_input(name, data)
            return tuple(pipe.run())
        except RuntimeError:
            self._pipes.pop(kind, None)  # a failed DALI pipeline cannot run again
            raise

    def _check_frames(self, out: dict, n: int, what: str) -> dict:
        want = self.cfg.n_frames(n)
        if out["logmel"].shape != (self.cfg.n_mels, want) or out["mfcc"].shape[-1] != want:
            raise RuntimeError(f"{what}: DALI gave log-Mel {out['logmel'].shape} and MFCC "
                               f"{out['mfcc'].shape} for {n} samples; expected {want} frames")
        return out

    # ---------------------------------------------------------------- API
    def _checked_waves(self, waveforms) -> List[np.ndarray]:
        waves = [np.ascontiguousarray(w) for w in check_waveforms(waveforms)]
        for i, w in enumerate(waves):
            if w.size == 0 or (not self.cfg.center and w.size < self.cfg.n_fft):
                raise ValueError(f"waveform {i}: {w.size} samples is too short for DALI "
                                 f"(n_fft={self.cfg.n_fft}, center={self.cfg.center})")
        return waves

    def _array_batches(self, waveforms) -> Iterator[Tuple[int, list, tuple]]:
        """Per DALI iteration: (index of its first clip, its waveforms, output TensorLists)."""
        waves = self._checked_waves(waveforms)
        for s in range(0, len(waves), self.batch_size):
            chunk = waves[s:s + self.batch_size]
            yield s, chunk, self._execute("arrays", {"audio": chunk})

    def from_arrays(self, waveforms: Sequence[np.ndarray]) -> List[Dict[str, np.ndarray]]:
        """Features of mono waveforms ``(n_i,)`` already at ``cfg.sample_rate``.

        Returns ``[{"logmel": (n_mels, T_i), "mfcc": (n_mfcc, T_i)}]``, T_i = cfg.n_frames(n_i).
        """
        out: List[Dict[str, np.ndarray]] = []
        for s, chunk, (lm_tl, mf_tl) in self._array_batches(waveforms):
            for i, (lm, mf) in enumerate(zip(_host_samples(lm_tl, len(chunk)),
                                             _host_samples(mf_tl, len(chunk)))):
                out.append(self._check_frames({"logmel": lm, "mfcc": mf}, chunk[i].size,
                                              f"waveform {s + i}"))
        return out

    compute = from_arrays

    def _prepare(self, path) -> tuple:
        """(encoded bytes, anti-alias kernel (1, taps), file rate) of one file, or an AudioError."""
        import soundfile as sf

        p = Path(path)
        if not p.is_file():
            raise AudioMissingError(p)
        blob = np.fromfile(p, dtype=np.uint8)
        if blob.size == 0:
            raise AudioEmptyError(p)
        try:
            info = sf.info(str(p))
        except (RuntimeError, sf.LibsndfileError) as exc:
            raise AudioCorruptError(p, str(exc)) from exc
        if info.format in ("MP3", "MPEG") or info.subtype.startswith("MPEG_LAYER"):
            raise AudioUnsupportedFormatError(p, "DALI's decoder does not read MP3: decode it with "
                                                 "mmengine.data.audio.load_audio and use from_arrays")
        kernel = antialias_kernel(info.samplerate, self.cfg.sample_rate)
        return blob, kernel[None, :], float(info.samplerate)

    def _file_batches(self, paths: Sequence) -> Iterator[Tuple[list, List[int], tuple]]:
        """Per DALI iteration: (its paths, decoded lengths in samples, (log-Mel, MFCC) lists).

        A failing iteration of several files is rerun one file per iteration, so that the
        ``AudioCorruptError`` names the file DALI refused."""
        paths = list(paths)
        for s in range(0, len(paths), self.batch_size):
            chunk = paths[s:s + self.batch_size]
            prepared = [self._prepare(p) for p in chunk]
            feeds = {"encoded": [b for b, _, _ in prepared], "kernel": [k for _, k, _ in prepared]}
            try:
                lm_tl, mf_tl, rate_tl, length_tl = self._execute("files", feeds)
            except RuntimeError as exc:
                if len(chunk) == 1:
                    raise AudioCorruptError(chunk[0], _dali_reason(exc)) from exc
                # DALI does not say which sample failed: one file per iteration names it
                for p in chunk:
                    yield from self._file_batches([p])
                continue
            rates = _host_samples(rate_tl, len(chunk))
            lengths = [int(n[0]) for n in _host_samples(length_tl, len(chunk))]
            for p, (_, _, rate_in), rate in zip(chunk, prepared, rates):
                if float(rate) != rate_in:
                    raise AudioCorruptError(p, f"DALI decoded it at {float(rate)} Hz, its header "
                                               f"says {rate_in} Hz")
            yield chunk, lengths, (lm_tl, mf_tl)

    def from_files(self, paths: Sequence) -> List[Dict[str, np.ndarray]]:
        """Decode (WAV/FLAC/OGG), downmix, resample and compute features of every file.

        Returns ``[{"logmel": (n_mels, T_i), "mfcc": (n_mfcc, T_i)}]`` in the order of
        ``paths``. Raises the ``AudioError`` subclass of the first file that fails (missing,
        empty, MP3, or refused by DALI's decoder), naming it.
        """
        out: List[Dict[str, np.ndarray]] = []
        for chunk, lengths, (lm_tl, mf_tl) in self._file_batches(paths):
            for p, n, lm, mf in zip(chunk, lengths, _host_samples(lm_tl, len(chunk)),
                                    _host_samples(mf_tl, len(chunk))):
                out.append(self._check_frames({"logmel": lm, "mfcc": mf}, n, str(p)))
        return out
