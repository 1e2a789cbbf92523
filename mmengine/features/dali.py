"""NVIDIA DALI front end: decode → spectrogram → mel_filter_bank → to_decibels → mfcc.

Runs DALI's CPU operators here (``device="cpu"``, no GPU needed) and the GPU operators when
``device="gpu"`` and a CUDA device exists. Every DALI default that differs from the reference
(:mod:`mmengine.features.reference`, i.e. librosa with :class:`FrontendConfig` pinned) is set
explicitly:

=====================  =====================  ===============================================
operator / argument    DALI default           pinned to
=====================  =====================  ===============================================
spectrogram window_fn  symmetric Hann         periodic Hann of n_fft (``reference.hann_window``)
window_length/step     512 / 256              n_fft / hop_length
nfft                   window_length          n_fft
center_windows         True                   cfg.center
reflect_padding        True                   False when pad_mode == "constant" (zeros)
power                  2                      cfg.power
mel sample_rate        44100                  cfg.sample_rate
mel freq_low/high      0 / 0 (= Nyquist)      cfg.fmin / cfg.fmax or Nyquist
mel_formula            "slaney"               cfg.mel_scale
mel normalize          True (Slaney area)     cfg.mel_norm == "slaney"
to_decibels reference  0 (= max of the clip)  cfg.db_ref (fixed 1.0)
to_decibels cutoff_db  -200                   10*log10(cfg.amin) (= -100 dB, absolute)
to_decibels multiplier 10                     10 (power spectrum)
mfcc normalize         False                  True (orthonormal DCT-II, as scipy norm="ortho")
mfcc dct_type / lifter 2 / 0                  2 / 0
decoders.audio         native rate, no mixing sample_rate=cfg.sample_rate, downmix=True
=====================  =====================  ===============================================

DALI's audio decoder reads WAV, FLAC and OGG but not MP3: :meth:`DaliFrontend.from_arrays`
takes waveforms decoded elsewhere (``mmengine.data.audio.load_audio``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from .._ext import cuda_available, require
from ..config import FrontendConfig
from ..errors import BackendUnavailableError
from .reference import hann_window


class DaliFrontend:
    """Batched DALI front end with the reference's parameters.

    Args:
        cfg: front-end settings.
        device: "cpu" (DALI CPU operators, no GPU needed) or "gpu".
        batch_size: clips per DALI iteration.
        num_threads: DALI CPU threads.

    Outputs are numpy dicts ``{"logmel": (n_mels, frames), "mfcc": (n_mfcc, frames)}``.
    """

    def __init__(self, cfg: FrontendConfig = FrontendConfig(), *, device: str = "cpu",
                 batch_size: int = 8, num_threads: int = 2):
        require("dali")
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', not {device!r}")
        if device == "gpu" and not cuda_available():
            raise BackendUnavailableError("DALI device='gpu' needs a CUDA device; use device='cpu'")
        if cfg.window != "hann" or cfg.pad_mode not in ("constant", "reflect"):
            raise ValueError("DALI front end supports the periodic Hann window and "
                             "constant/reflect padding only")
        self.cfg, self.device = cfg, device
        self.batch_size, self.num_threads = batch_size, num_threads
        self._pipes: Dict[str, object] = {}

    # ---------------------------------------------------------------- graph
    def _features(self, audio):
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
            freq_high=float(c.fmax if c.fmax is not None else c.sample_rate / 2),
            mel_formula=c.mel_scale, normalize=c.mel_norm == "slaney")
        db = fn.to_decibels(mel, multiplier=10.0, reference=float(c.db_ref),
                            cutoff_db=10.0 * math.log10(c.amin))
        mfcc = fn.mfcc(db, n_mfcc=c.n_mfcc, dct_type=2, normalize=True, lifter=0.0, axis=0)
        return db, mfcc

    def _pipe(self, kind: str):
        if kind in self._pipes:
            return self._pipes[kind]
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import pipeline_def

        device_id = 0 if self.device == "gpu" else None

        @pipeline_def(batch_size=self.batch_size, num_threads=self.num_threads,
                      device_id=device_id, exec_dynamic=True,
                      prefetch_queue_depth=1)
        def graph():
            if kind == "files":
                encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
                audio, _ = fn.decoders.audio(encoded, sample_rate=float(self.cfg.sample_rate),
                                             downmix=True, dtype=types.FLOAT)
            else:
                audio = fn.external_source(name="audio", dtype=types.FLOAT, ndim=1)
            return self._features(audio)

        pipe = graph()
        pipe.build()
        self._pipes[kind] = pipe
        return pipe

    def _run(self, kind: str, name: str, items: Sequence[np.ndarray]) -> List[dict]:
        pipe = self._pipe(kind)
        out: List[dict] = []
        for i in range(0, len(items), self.batch_size):
            chunk = list(items[i: i + self.batch_size])
            n = len(chunk)
            chunk += [chunk[-1]] * (self.batch_size - n)  # DALI wants full batches
            pipe.feed_input(name, chunk)
            lm, mf = pipe.run()
            if self.device == "gpu":
                lm, mf = lm.as_cpu(), mf.as_cpu()
            out += [{"logmel": np.array(lm.at(j)), "mfcc": np.array(mf.at(j))} for j in range(n)]
        return out

    # ---------------------------------------------------------------- API
    def from_files(self, paths: Sequence) -> List[dict]:
        """Decode (WAV/FLAC/OGG), resample, downmix and compute features of every file."""
        blobs = [np.frombuffer(Path(p).read_bytes(), dtype=np.uint8) for p in paths]
        return self._run("files", "encoded", blobs)

    def from_arrays(self, waveforms: Sequence[np.ndarray]) -> List[dict]:
        """Features of mono waveforms ``(n,)`` already at ``cfg.sample_rate``."""
        return self._run("arrays", "audio",
                         [np.ascontiguousarray(w, dtype=np.float32) for w in waveforms])
