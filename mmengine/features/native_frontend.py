"""The native front end: log-Mel (dB) + MFCC (+ the chroma pitch stream) in C++
(``mmengine._C.MelFrontend``).

Same features as :mod:`mmengine.features.reference` (the window, Mel filter bank and DCT
matrices are the reference's own, handed to C++ once), computed in float32:

- W consecutive frames of a clip go through the FFT together, one frame per SIMD lane
  (W = 16 with AVX-512, 8 with AVX2, 1 otherwise; chosen at run time like the LSTM kernels),
  so every butterfly, Mel sum and DCT row is vertical vector arithmetic;
- the 2048-point real FFT is a 1024-point complex Stockham radix-4 FFT plus the split step;
- the Mel filter bank is applied sparsely (each band's run of nonzero bins only);
- (clip, block of W frames) work items are spread over OpenMP threads, so a single long clip
  uses every core as well as a batch does. Scratch is allocated once per thread and kept.

:meth:`NativeFrontend.from_files` decodes (:func:`mmengine.data.audio.load_audio`: typed
errors, soxr) and computes features file by file in a pool of threads, each with its own
scratch, so decoding and transforms of different files overlap without oversubscribing cores.

Accuracy against the float64 reference: see ``tests/test_frontend_native.py`` (the same
criteria as the DALI front end: float32 FFT rounding sits ~140 dB under a clip's peak).
"""
from __future__ import annotations

import os
import queue
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence

import numpy as np

from .._ext import native_extension
from ..config import AudioConfig, FrontendConfig
from ..errors import BackendUnavailableError
from . import reference
from .base import Frontend

#: why the native front end cannot run, when ``available()`` is False
UNAVAILABLE = ("the native front end is not built (mmengine._C missing or without "
               "MelFrontend): reinstall with 'pip install -e .' and a C++ compiler")


def available() -> bool:
    """True when ``mmengine._C`` was built with the native front end."""
    C = native_extension()
    return C is not None and hasattr(C, "MelFrontend")


def supports(cfg: FrontendConfig) -> bool:
    """True when the kernels handle ``cfg``: n_fft (and chroma_n_fft with the pitch stream) a
    power of two >= 16, power 1 or 2."""
    sizes = [int(cfg.n_fft)] + ([int(cfg.chroma_n_fft)] if cfg.chroma_bins else [])
    return all(n >= 16 and (n & (n - 1)) == 0 for n in sizes) and float(cfg.power) in (1.0, 2.0)


def _default_threads() -> int:
    C = native_extension()
    return int(C.max_threads()) if C is not None else (os.cpu_count() or 1)


class NativeFrontend(Frontend):
    """Log-Mel + MFCC of waveforms or audio files with the C++ kernels.

    Args:
        cfg: front-end settings (:class:`~mmengine.config.FrontendConfig`).
        num_threads: OpenMP threads for the features (0 = all cores).
        audio_cfg: decoding settings for :meth:`from_files` (rate must equal ``cfg``'s).
        decode_workers: threads decoding files in :meth:`from_files` (0 = ``num_threads``).

    Raises:
        BackendUnavailableError: the extension was built without the front end.
        ValueError: ``cfg`` is invalid or not supported (:func:`supports`).

    Example::

        >>> fe = NativeFrontend()
        >>> out = fe.compute([np.zeros(22050, np.float32)])
        >>> out[0]["logmel"].shape, out[0]["mfcc"].shape
        ((128, 44), (20, 44))
    """

    name = "native"
    serial_compute = True  # compute_serial: each decoding thread featurises its own windows

    def __init__(self, cfg: FrontendConfig = FrontendConfig(), *, num_threads: int = 0,
                 audio_cfg: Optional[AudioConfig] = None, decode_workers: int = 0):
        if not available():
            raise BackendUnavailableError(UNAVAILABLE)
        self.cfg = reference.check_config(cfg)
        if not supports(cfg):
            raise ValueError(f"the native front end needs n_fft a power of two >= 16 and power "
                             f"1 or 2, got n_fft={cfg.n_fft}, power={cfg.power} (use the "
                             f"'reference' front end)")
        self.audio_cfg = audio_cfg or AudioConfig(sample_rate=cfg.sample_rate)
        if self.audio_cfg.sample_rate != cfg.sample_rate:
            raise ValueError(f"audio rate {self.audio_cfg.sample_rate} Hz != front-end rate "
                             f"{cfg.sample_rate} Hz")
        self.num_threads = int(num_threads) if num_threads > 0 else _default_threads()
        self.decode_workers = int(decode_workers) if decode_workers > 0 else self.num_threads
        # the reference's own window, filter bank and DCT, handed to every plan
        self._tables = (
            reference.hann_window(cfg.n_fft, dtype=np.float32),
            np.ascontiguousarray(reference.mel_filterbank(
                sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin,
                fmax=cfg.fmax, scale=cfg.mel_scale, norm=cfg.mel_norm, dtype=np.float32)),
            np.ascontiguousarray(reference.dct_matrix(cfg.n_mfcc, cfg.n_mels, dtype=np.float32)))
        # the pitch stream is the same kernels with the chroma filter bank in place of the
        # Mel one and no DCT: a second plan of chroma_n_fft points at the same hop
        self._chroma_tables = None if not cfg.chroma_bins else (
            reference.hann_window(cfg.chroma_n_fft, dtype=np.float32),
            reference.chroma_filterbank(
                sr=cfg.sample_rate, n_fft=cfg.chroma_n_fft, n_chroma=cfg.chroma_bins,
                ctroct=cfg.chroma_ctroct, octwidth=cfg.chroma_octwidth, dtype=np.float32),
            np.zeros((0, cfg.chroma_bins), np.float32))
        self._plan = self._make_plan()
        # plans (each with its scratch) lent to one thread at a time by compute_serial and
        # from_files; kept across calls, one is made only when all are in use
        self._idle: "queue.SimpleQueue" = queue.SimpleQueue()

    def n_frames(self, n_samples: int) -> int:
        """Frames of a waveform of ``n_samples`` samples."""
        return int(self._plan[0].n_frames(int(n_samples)))

    @staticmethod
    def _run(plan, waves: List[np.ndarray], threads: int) -> List[Dict[str, np.ndarray]]:
        mel, chroma = plan
        out = [{"logmel": lm, "mfcc": mf} for lm, mf in mel.compute(waves, threads)]
        if chroma is not None:
            for item, (ch, _) in zip(out, chroma.compute(waves, threads)):
                item["chroma"] = ch
        return out

    def compute(self, waveforms: Sequence[np.ndarray]) -> List[Dict[str, np.ndarray]]:
        """Features of each waveform ``(n_i,)`` at ``cfg.sample_rate``:
        ``[{"logmel": (n_mels, T_i), "mfcc": (n_mfcc, T_i)}]`` float32, in input order.

        Raises ``ValueError`` naming the index of a waveform that is not 1-D or not finite."""
        from .base import check_waveforms

        return self._run(self._plan, check_waveforms(waveforms), self.num_threads)

    @contextmanager
    def _borrowed_plan(self):
        try:
            plan = self._idle.get_nowait()
        except queue.Empty:
            plan = self._make_plan()
        try:
            yield plan
        finally:
            self._idle.put(plan)

    def compute_serial(self, waveforms: Sequence[np.ndarray]) -> List[Dict[str, np.ndarray]]:
        """:meth:`compute` on the calling thread only, with a plan (scratch) no other thread
        uses meanwhile: for pipelines whose worker threads each decode and featurise their own
        files (no lock shared with other threads, no oversubscribed cores)."""
        from .base import check_waveforms

        with self._borrowed_plan() as plan:
            return self._run(plan, check_waveforms(waveforms), 1)

    def _make_plan(self):
        """``(Mel plan, chroma plan or None)``: each with its own scratch."""
        cfg, C = self.cfg, native_extension()

        def plan(n_fft, power, tables):
            win, fb, dct = tables
            return C.MelFrontend(n_fft, cfg.hop_length, bool(cfg.center), cfg.pad_mode,
                                 float(power), win, fb, dct, float(cfg.amin), float(cfg.db_ref))

        return (plan(cfg.n_fft, cfg.power, self._tables),
                None if self._chroma_tables is None else
                plan(cfg.chroma_n_fft, cfg.chroma_power, self._chroma_tables))

    def from_files(self, paths: Sequence) -> List[Dict[str, np.ndarray]]:
        """Decode ``paths`` (:func:`~mmengine.data.audio.load_audio`) and compute their
        features, in input order.

        Each of ``decode_workers`` threads takes a file, decodes it and computes its
        features with a plan (scratch) of its own, so the cores never wait for one another
        and are never oversubscribed; with fewer files than workers, each file's features use
        the spare threads.

        Raises:
            AudioError: the subclass of the first file (in input order) that fails, naming it.
        """
        from ..data.audio import load_audio

        paths = list(paths)
        if not paths:
            return []
        workers = min(self.decode_workers, len(paths))
        per_item = max(1, self.num_threads // workers)

        def one(path):
            y = load_audio(path, self.audio_cfg)  # mono, finite, at the front end's rate
            with self._borrowed_plan() as plan:
                return self._run(plan, [y], per_item)[0]

        if workers == 1:
            return [one(p) for p in paths]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, paths))
