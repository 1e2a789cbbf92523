"""Contenders and workloads of the peer benchmarks (``bench/run_peers.py``; not run in CI).

Every ``*_factory`` function runs inside a harness worker (``mmengine.harness``) as
``factory(threads=..., **kwargs) -> (info, make)``; ``make(params, batch)`` returns the
callable timed for one (workload, batch). Heavy imports happen inside them, never at module
level (this module is also imported by the parent process and by spawned workers).

Workloads:

* classifier: ``x`` (B, T, D) float32, standard normal (``default_rng(B)``, the same array in
  every process), 2-layer LSTM hidden 128 (weights from ``torch.manual_seed(0)``, the same in
  every process), zero states, last hidden state out. Standard shape D = 148 at T = 1,292 and
  T = 646, plus the model's own shape (``model_shape``: the fused width, hidden size, layers
  and the frame count after the stems, T' = FusionLSTM.out_frames(1292) = 646 by default).
  FLOPs per sequence: T * sum_l 2 * 4H * (D_l + H) (``mmengine.flops.recurrent_flops``).
* frontend: B audio files (30 s, 22,050 Hz FLAC) → log-Mel (128, 1292) + MFCC (20, 1292).
* e2e: B audio files → class probabilities with ``Engine.classify(paths, batch_size=B)``.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mmengine.flops import recurrent_flops  # noqa: E402
from mmengine.harness import Contender, Workload  # noqa: E402

D_STD, H_STD, L_STD = 148, 128, 2
FRAMES_30S = 1292
CLIP_SECONDS, SAMPLE_RATE = 30.0, 22050
CACHE = Path(tempfile.gettempdir()) / "mmengine-bench"


# =============================================================================== classifier
def _torch_lstm(params: dict):
    import torch

    torch.manual_seed(0)
    return torch.nn.LSTM(params["D"], params["H"], params["L"], batch_first=True).eval()


def _x(params: dict, batch: int):
    import numpy as np

    return np.random.default_rng(batch).standard_normal((batch, params["T"], params["D"]),
                                                        dtype=np.float32)


def torch_eager_factory(threads: int, bf16: bool = False):
    """``torch.nn.LSTM`` eager (oneDNN/MKL), no_grad, fp32 or CPU autocast bf16."""
    import torch

    torch.set_num_threads(threads)
    lstms = {}

    def make(params, batch):
        key = (params["D"], params["H"], params["L"])
        if key not in lstms:
            lstms[key] = _torch_lstm(params)
        lstm, x = lstms[key], torch.from_numpy(_x(params, batch))

        if bf16:
            def run():
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                    return lstm(x)
        else:
            def run():
                with torch.no_grad():
                    return lstm(x)
        return run

    return f"torch {torch.__version__} eager {'bf16 autocast' if bf16 else 'fp32'}", make


def onnxruntime_factory(threads: int):
    """The torch LSTM exported to ONNX (opset 17, dynamic batch/time), ONNX Runtime CPU EP."""
    import warnings

    import onnxruntime as ort
    import torch

    torch.set_num_threads(threads)
    sessions = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-ort-"))

    def session(params):
        key = (params["D"], params["H"], params["L"])
        if key not in sessions:
            lstm = _torch_lstm(params)
            path = tmp / ("lstm-%d-%d-%d.onnx" % key)
            x = torch.zeros(2, 8, params["D"])
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(lstm, (x,), str(path), dynamo=False, opset_version=17,
                                  input_names=["x"], output_names=["y", "h_n", "c_n"],
                                  dynamic_axes={"x": {0: "batch", 1: "time"},
                                                "y": {0: "batch", 1: "time"},
                                                "h_n": {1: "batch"}, "c_n": {1: "batch"}})
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sessions[key] = ort.InferenceSession(str(path), so,
                                                 providers=["CPUExecutionProvider"])
        return sessions[key]

    def make(params, batch):
        sess, x = session(params), _x(params, batch)
        return lambda: sess.run(["h_n"], {"x": x})

    return f"onnxruntime {ort.__version__} CPU EP (intra {threads}, inter 1, sequential)", make


def native_lstm_factory(threads: int, dtype: str = "fp32"):
    """``mmengine.runtime.native_lstm.NativeLSTM`` (C++ kernels), fp32 or bf16 weights."""
    from mmengine._ext import native_extension
    from mmengine.models.reference import layers_from_torch
    from mmengine.runtime.native_lstm import NativeLSTM

    nets = {}

    def make(params, batch):
        key = (params["D"], params["H"], params["L"])
        if key not in nets:
            nets[key] = NativeLSTM(layers_from_torch(_torch_lstm(params)), dtype=dtype)
        net, x = nets[key], _x(params, batch)
        net.reserve(batch, params["T"], threads)
        return lambda: net.forward(x, num_threads=threads)

    return f"mmengine native {dtype}, ISA {native_extension().selected_isa()}", make


def model_shape(frames: int = FRAMES_30S) -> dict:
    """The LSTM shape of the trained model (env ``MMENGINE_BENCH_RUN``: a run folder or
    checkpoint) or of the default ``ModelConfig`` with every modality: D = fused width, H, L,
    T' = the recurrence's steps for ``frames`` input frames (``FusionLSTM.out_frames``)."""
    run = os.environ.get("MMENGINE_BENCH_RUN")
    if run:
        from mmengine.checkpoint import load_checkpoint

        model, _ = load_checkpoint(run)
        source = f"trained run {run}"
    else:
        model = random_model()[0]
        source = "default ModelConfig (all modalities)"
    cfg = model.cfg
    if cfg.cell != "lstm":
        raise ValueError(f"the model uses a {cfg.cell} cell; the classifier suite times LSTMs")
    return {"kind": "lstm", "D": int(model.fused_dim), "H": int(cfg.hidden_size),
            "L": int(cfg.num_layers), "T": int(model.out_frames(frames)),
            "source": source}


def classifier_suite(frames: Sequence[int] = (FRAMES_30S, 646), model: bool = True
                     ) -> Tuple[List[Contender], List[Workload]]:
    """Contenders and workloads of the classifier suite."""
    contenders = [
        Contender("torch-eager", "bench.contenders:torch_eager_factory"),
        Contender("torch-bf16", "bench.contenders:torch_eager_factory", {"bf16": True}),
        Contender("onnxruntime", "bench.contenders:onnxruntime_factory"),
        Contender("native-fp32", "bench.contenders:native_lstm_factory", {"dtype": "fp32"}),
        Contender("native-bf16", "bench.contenders:native_lstm_factory", {"dtype": "bf16"}),
    ]
    workloads = []
    for T in frames:
        p = {"kind": "lstm", "D": D_STD, "H": H_STD, "L": L_STD, "T": int(T)}
        workloads.append(Workload(f"lstm-T{T}", p, "sequences",
                                  recurrent_flops(D_STD, H_STD, L_STD, T)))
    if model:
        p = model_shape()
        workloads.append(Workload(f"model-T{p['T']}", p, "sequences",
                                  recurrent_flops(p["D"], p["H"], p["L"], p["T"])))
    return contenders, workloads


# =============================================================================== audio clips
def synth_clips(n: int = 16, seconds: float = CLIP_SECONDS, sr: int = SAMPLE_RATE,
                folder: Optional[Path] = None) -> List[str]:
    """``n`` mono FLAC clips (noise + a few tones), cached under the system temp folder."""
    import numpy as np
    import soundfile as sf

    folder = Path(folder or CACHE / "clips")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"synth-{i:02d}-{int(seconds)}s-{sr}.flac"
        if not p.is_file():
            rng = np.random.default_rng(i)
            t = np.arange(int(seconds * sr)) / sr
            y = 0.05 * rng.standard_normal(t.size)
            for f in rng.uniform(110, 2000, size=4):
                y += 0.15 * np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
            tmp = p.with_suffix(".tmp.flac")
            sf.write(str(tmp), (y / np.abs(y).max() * 0.9).astype(np.float32), sr,
                     subtype="PCM_16")
            os.replace(tmp, p)
        paths.append(str(p))
    return paths


def clip_paths(n: int = 64) -> Tuple[List[str], str]:
    """Up to ``n`` 30 s clips: the built-in folk set's FLAC files when built, else synthetic
    ones (see ``synth_clips``). Returns (paths, description)."""
    from mmengine.data.corpus.build import default_dir

    folk = sorted((default_dir("folk") / "audio").glob("*.flac"))
    if folk:
        return [str(p) for p in folk[:n]], f"folk clips ({default_dir('folk')}/audio)"
    return synth_clips(min(n, 16)), f"synthetic clips ({CACHE / 'clips'})"


def _batch_paths(params: dict, batch: int) -> List[str]:
    clips = params["clips"]
    return [clips[i % len(clips)] for i in range(batch)]


# =============================================================================== front ends
def _cfg():
    """The log-Mel + MFCC settings every front-end contender computes (the peers compute no
    chroma, so neither does ours here: its cost is the chroma suite's)."""
    from mmengine.config import FrontendConfig

    return FrontendConfig(chroma_bins=0)


def _read(path, sr):
    import soundfile as sf

    y, rate = sf.read(path, dtype="float32", always_2d=False)
    if y.ndim == 2:
        y = y.mean(axis=1)
    if rate != sr:
        raise ValueError(f"{path}: {rate} Hz, the benchmark clips must be at {sr} Hz")
    return y


def librosa_factory(threads: int):
    """soundfile read (float32) + librosa melspectrogram + power_to_db + scipy DCT-II ortho,
    one clip after another (librosa has no batch API), FrontendConfig's parameters."""
    import librosa
    import numpy as np
    import scipy.fft

    c = _cfg()

    def features(path):
        y = _read(path, c.sample_rate)
        S = librosa.feature.melspectrogram(
            y=y, sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.n_fft,
            window=c.window, center=c.center, pad_mode=c.pad_mode, power=c.power,
            n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax, htk=c.mel_scale == "htk",
            norm="slaney" if c.mel_norm == "slaney" else None)
        logmel = librosa.power_to_db(S, ref=c.db_ref, amin=c.amin, top_db=None)
        mfcc = scipy.fft.dct(logmel, type=2, norm="ortho", axis=-2)[:c.n_mfcc]
        return {"logmel": logmel.astype(np.float32), "mfcc": mfcc.astype(np.float32)}

    def make(params, batch):
        paths = _batch_paths(params, batch)
        return lambda: [features(p) for p in paths]

    return (f"librosa {librosa.__version__}: soundfile decode + melspectrogram, one clip after "
            f"another in one process (numpy FFT 1 thread; the Mel matmul on BLAS with "
            f"{_blas_threads()} threads)"), make


def _blas_threads() -> str:
    """Threads of the BLAS numpy uses here (threadpoolctl, a scikit-learn dependency)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "its default"
    n = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return str(max(n)) if n else "its default"


def _librosa_clip(path):
    """One clip's (logmel, mfcc) as ``librosa_factory`` computes it (a pool worker's task)."""
    import librosa
    import numpy as np
    import scipy.fft

    c = _cfg()
    y = _read(path, c.sample_rate)
    S = librosa.feature.melspectrogram(
        y=y, sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.n_fft,
        window=c.window, center=c.center, pad_mode=c.pad_mode, power=c.power,
        n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax, htk=c.mel_scale == "htk",
        norm="slaney" if c.mel_norm == "slaney" else None)
    logmel = librosa.power_to_db(S, ref=c.db_ref, amin=c.amin, top_db=None)
    mfcc = scipy.fft.dct(logmel, type=2, norm="ortho", axis=-2)[:c.n_mfcc]
    return logmel.astype(np.float32), mfcc.astype(np.float32)


def librosa_pool_factory(threads: int):
    """What a librosa user does on N cores: a pool of N worker processes (spawned once, warm),
    the clips of a batch mapped over them (``ProcessPoolExecutor.map``, results pickled back).
    Peak RSS is the parent's only; each worker holds its own librosa (~250 MB)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import librosa

    # the harness worker is a daemonic process, which multiprocessing forbids to have children;
    # this contender's children are a plain process pool that the worker shuts down itself
    mp.current_process()._config["daemon"] = False
    # one thread per process (BLAS too: N processes x default BLAS threads would oversubscribe)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    pool = ProcessPoolExecutor(max_workers=threads, mp_context=mp.get_context("spawn"))
    # warm every worker (imports, librosa's filter caches) before anything is timed
    list(pool.map(_librosa_clip, synth_clips(threads), chunksize=1))

    def make(params, batch):
        paths = _batch_paths(params, batch)
        return lambda: list(pool.map(_librosa_clip, paths, chunksize=max(1, batch // threads)))

    return (f"librosa {librosa.__version__}: the same per-clip code in a pool of {threads} "
            f"processes (1 thread each, BLAS included; features pickled back)"), make


def dali_cpu_factory(threads: int):
    """``mmengine.features.dali.DaliFrontend(device="cpu")``: DALI decode + resample +
    spectrogram + Mel + dB + MFCC, one DALI batch of B files."""
    import nvidia.dali as dali

    from mmengine.features.dali import DaliFrontend

    c = _cfg()

    def make(params, batch):
        fe = DaliFrontend(c, device="cpu", num_threads=threads, batch_size=batch)
        paths = _batch_paths(params, batch)
        return lambda: fe.from_files(paths)

    return f"DALI {dali.__version__} CPU operators, {threads} threads", make


def _plain_dali_pipe(batch: int, threads: int):
    """The DALI CPU pipeline a DALI user writes for clips already at the target rate:
    decode (downmix) → spectrogram → Mel filter bank → dB → MFCC, with this project's pinned
    settings (periodic Hann, zero padding, Slaney Mel, absolute −100 dB floor). No resampling,
    anti-alias filter or peak scaling (``DaliFrontend`` adds those for arbitrary files)."""
    import numpy as np
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    from mmengine.features.reference import hann_window

    c = _cfg()

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=None, exec_dynamic=True,
                  prefetch_queue_depth=1)
    def graph():
        enc = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        audio, _ = fn.decoders.audio(enc, downmix=True, dtype=types.FLOAT)
        spec = fn.spectrogram(audio, nfft=c.n_fft, window_length=c.n_fft,
                              window_step=c.hop_length, center_windows=c.center,
                              reflect_padding=c.pad_mode == "reflect",
                              window_fn=hann_window(c.n_fft, np.float32).tolist(),
                              power=int(c.power))
        mel = fn.mel_filter_bank(spec, sample_rate=c.sample_rate, nfilter=c.n_mels,
                                 freq_low=c.fmin, freq_high=c.fmax or c.sample_rate / 2,
                                 normalize=c.mel_norm == "slaney", mel_formula=c.mel_scale)
        db = fn.to_decibels(mel, multiplier=10.0, reference=c.db_ref,
                            cutoff_db=10.0 * np.log10(c.amin / c.db_ref))
        return db, fn.mfcc(db, n_mfcc=c.n_mfcc, normalize=True)

    pipe = graph()
    pipe.build()
    return pipe


def _run_plain_dali(pipe, paths):
    """Read the files' bytes and run the plain pipeline: per-clip numpy (logmel, mfcc)."""
    import numpy as np

    pipe.feed_input("encoded", [np.fromfile(p, dtype=np.uint8) for p in paths])
    db, mf = pipe.run()
    return [np.array(db[i]) for i in range(len(db))], [np.array(mf[i]) for i in range(len(mf))]


def dali_plain_factory(threads: int):
    """``_plain_dali_pipe``: the plain DALI CPU pipeline, one DALI batch of B files."""
    import nvidia.dali as dali

    def make(params, batch):
        pipe = _plain_dali_pipe(batch, threads)
        paths = _batch_paths(params, batch)
        return lambda: _run_plain_dali(pipe, paths)

    return f"DALI {dali.__version__} CPU, plain pipeline (no resampling), {threads} threads", make


def dali_plain_ort_factory(threads: int, engine: str):
    """Plain DALI CPU features (``_plain_dali_pipe``) → ONNX Runtime running the engine's
    classifier (the ``onnx`` engine file's session) → softmax; modalities the clips lack
    (text, symbolic) are fed as absent (zeros, mask 0), as ``Engine.classify`` does."""
    import numpy as np

    from mmengine.export import example_inputs
    from mmengine.runtime.engine import Engine

    eng = Engine.load(engine, backend="onnx", threads=threads)

    def make(params, batch):
        pipe = _plain_dali_pipe(batch, threads)
        paths = _batch_paths(params, batch)

        def run():
            lm, mf = _run_plain_dali(pipe, paths)
            x = example_inputs(eng.header["io"]["inputs"], batch, lm[0].shape[-1])
            x = {k: np.zeros_like(v) for k, v in x.items()}
            x["logmel"], x["mfcc"] = np.stack(lm), np.stack(mf)
            return eng.predict_features(x)
        return run

    return f"plain DALI CPU pipeline + ONNX Runtime ({eng.backend}), {threads} threads", make


def torch_frontend_factory(threads: int):
    """soundfile decode + ``get_frontend("torch", cfg)`` (the batched LogMelMFCC module)."""
    import torch

    from mmengine.features.frontend import get_frontend

    torch.set_num_threads(threads)
    c = _cfg()

    def make(params, batch):
        fe = get_frontend("torch", c, batch_size=batch)
        paths = _batch_paths(params, batch)
        return lambda: fe.compute([_read(p, c.sample_rate) for p in paths])

    return f"torch {torch.__version__} LogMelMFCC + soundfile decode", make


def native_frontend_factory(threads: int, chroma: bool = False):
    """``mmengine.features.native_frontend.NativeFrontend(cfg, num_threads).from_files(paths)``
    (``chroma``: with the default pitch stream, 12 chroma bins from an 8192-point FFT, as an
    engine of the default model computes; the peers compute no chroma)."""
    import dataclasses

    from mmengine.config import FrontendConfig
    from mmengine.features import native_frontend as native_fe
    from mmengine.features.native_frontend import NativeFrontend

    c = dataclasses.replace(_cfg(), chroma_bins=FrontendConfig().chroma_bins) if chroma else _cfg()
    if hasattr(native_fe, "available") and not native_fe.available():
        from mmengine.errors import BackendUnavailableError

        raise BackendUnavailableError("mmengine._C was built without the native front end")

    def make(params, batch):
        fe = NativeFrontend(c, num_threads=threads)
        paths = _batch_paths(params, batch)
        return lambda: fe.from_files(paths)

    extra = (f" + chroma ({c.chroma_n_fft}-point FFT, {c.chroma_bins} bins)" if chroma
             else "")
    return f"mmengine native front end{extra}, {threads} threads", make


def native_chroma_frontend_factory(threads: int):
    """``native_frontend_factory`` with the pitch stream (what the default model's engine
    computes): the chroma's cost, raced in the same rounds as the plain one."""
    return native_frontend_factory(threads, chroma=True)


def frontend_suite(clips: Sequence[str], clips_desc: str = ""
                   ) -> Tuple[List[Contender], List[Workload]]:
    """Contenders and the workload of the front-end suite."""
    contenders = [
        Contender("librosa", "bench.contenders:librosa_factory"),
        Contender("librosa-pool", "bench.contenders:librosa_pool_factory"),
        Contender("dali-cpu", "bench.contenders:dali_cpu_factory"),
        Contender("dali-plain", "bench.contenders:dali_plain_factory"),
        Contender("torch", "bench.contenders:torch_frontend_factory"),
        Contender("native", "bench.contenders:native_frontend_factory"),
        Contender("native+chroma", "bench.contenders:native_chroma_frontend_factory"),
    ]
    w = Workload("frontend-30s", {"kind": "frontend", "clips": list(clips),
                                  "source": clips_desc or f"{len(clips)} clips"}, "clips")
    return contenders, [w]


# =============================================================================== end to end
def random_model():
    """(model, build_engine_from_model keywords) of a random-weight FusionLSTM with every
    modality of the default ``ModelConfig`` (4 labels, a tiny TF-IDF vocabulary)."""
    import torch

    from mmengine.config import ModelConfig
    from mmengine.features.symbolic import symbolic_dim
    from mmengine.features.text import TextVectorizer
    from mmengine.models import build_model

    vec = TextVectorizer().fit(["reel jig fiddle tune", "slip jig in the morning",
                                "hornpipe on the sea shore", "fiddle reel at the fair"])
    torch.manual_seed(0)
    dims = {"n_mfcc": 20, "n_mels": 128, "text_dim": len(vec.vocabulary),
            "symbolic_dim": symbolic_dim(), "n_classes": 4, "multilabel": False}
    model = build_model(ModelConfig(), dims).eval()
    kw = {"labels": ["reel", "jig", "hornpipe", "slip jig"], "text": vec.to_json(),
          "text_field": "lyrics", "symbolic": {"dim": symbolic_dim()},
          "source": {"bench": "random weights"}}
    return model, kw


def build_engines(backends: Sequence[str] = ("native", "onnx")) -> Tuple[dict, str]:
    """Engine files for ``backends`` (cached under the temp folder): from ``MMENGINE_BENCH_RUN``
    when set (``mmengine.export.build_engine``), else from ``random_model()``. Returns
    ({backend: path}, description)."""
    from mmengine import export

    import mmengine

    run = os.environ.get("MMENGINE_BENCH_RUN")
    # cache key: the source (run folder or random) and the code that writes and reads engines
    h = hashlib.sha1((run or "random").encode())
    pkg = Path(mmengine.__file__).parent
    for rel in ("export.py", "runtime/engine_file.py", "runtime/native_backend.py",
                "runtime/native_model.py", "runtime/native_lstm.py",
                "runtime/onnx_backend.py", "runtime/torch_backend.py", "models/fusion.py",
                "models/blocks.py"):
        f = pkg / rel
        h.update(f.read_bytes() if f.is_file() else rel.encode())
    if run:
        for f in sorted(Path(run).glob("checkpoint*")) if Path(run).is_dir() else [Path(run)]:
            h.update(str(f.stat().st_mtime_ns).encode())
    tag = h.hexdigest()[:12]
    folder = CACHE / "engines"
    folder.mkdir(parents=True, exist_ok=True)
    out, model = {}, None
    for b in backends:
        path = folder / f"{tag}-{b}.mme"
        backend, _, dtype = b.partition("-")  # "native-bf16": the native backend in bf16
        dtype = dtype or "fp32"
        if not path.is_file():
            tmp = path.with_name(path.stem + f".tmp{os.getpid()}.mme")
            if run:
                export.build_engine(run, tmp, backend=backend, dtype=dtype)
            else:
                if model is None:
                    model, kw = random_model()
                export.build_engine_from_model(model, tmp, backend=backend, dtype=dtype, **kw)
            os.replace(tmp, path)
        out[b] = str(path)
    return out, (f"trained run {run}" if run else "random-weight FusionLSTM (default ModelConfig)")


def engine_factory(threads: int, engine: str, backend: str, frontend: str = "auto"):
    """``Engine.load(engine, backend=..., frontend=..., threads=...)``; the callable is
    ``.classify(paths, batch_size=B)`` (every result must be a ``Prediction``)."""
    from mmengine.runtime.engine import Engine

    eng = Engine.load(engine, backend=backend, frontend=frontend, threads=threads)
    # Engine.classify decodes every file itself (our FLAC decoder, libsndfile otherwise,
    # soxr when the rate differs); the front end computes features from the waveforms
    info = (f"Engine.classify: mmengine decode (own FLAC decoder) -> {eng.frontend.name} "
            f"front end features -> {eng.backend} backend, {threads} threads")

    def make(params, batch):
        paths = _batch_paths(params, batch)

        def run():
            res = eng.classify(paths, batch_size=batch)
            bad = [r for r in res if not r.ok]
            if bad:
                raise RuntimeError(f"{len(bad)} of {len(res)} inputs failed, first: "
                                   f"{bad[0].path}: {bad[0].error}")
            return res
        return run

    return info, make


# =============================================================================== decoders
def decode_native_factory(threads: int):
    """Our FLAC decoder (``mmengine._C.decode_flac``, frame CRCs checked): file bytes read with
    numpy, decoded one file after another (1 thread)."""
    import numpy as np

    from mmengine._ext import require_native_extension

    C = require_native_extension()

    def make(params, batch):
        paths = _batch_paths(params, batch)
        return lambda: [C.decode_flac(np.fromfile(p, dtype=np.uint8))[0] for p in paths]

    return "mmengine _C.decode_flac (C++), float32, one file after another, 1 thread", make


def decode_soundfile_factory(threads: int):
    """libsndfile through soundfile: ``sf.read(path, dtype="float32")`` one file after
    another (1 thread)."""
    import soundfile as sf

    def make(params, batch):
        paths = _batch_paths(params, batch)
        return lambda: [sf.read(p, dtype="float32")[0] for p in paths]

    return (f"soundfile {sf.__version__} (libsndfile {sf.__libsndfile_version__}) sf.read "
            f"float32, one file after another, 1 thread"), make


def decode_dali_factory(threads: int):
    """DALI's CPU audio decoder (``fn.decoders.audio``, float32, no downmix) on a batch of B
    files' bytes, ``threads`` DALI threads."""
    import numpy as np
    import nvidia.dali as dali
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    pipes = {}

    def pipe_for(batch):
        if batch not in pipes:
            @pipeline_def(batch_size=batch, num_threads=threads, device_id=None,
                          exec_dynamic=True, prefetch_queue_depth=1)
            def graph():
                enc = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
                audio, _ = fn.decoders.audio(enc, downmix=False, dtype=types.FLOAT)
                return audio
            pipes[batch] = graph()
            pipes[batch].build()
        return pipes[batch]

    def make(params, batch):
        pipe, paths = pipe_for(batch), _batch_paths(params, batch)

        def run():
            pipe.feed_input("encoded", [np.fromfile(p, dtype=np.uint8) for p in paths])
            (out,) = pipe.run()
            return [np.array(out[i]) for i in range(len(out))]
        return run

    return f"DALI {dali.__version__} fn.decoders.audio (CPU), {threads} threads", make


def decode_suite(clips: Sequence[str], clips_desc: str = ""
                 ) -> Tuple[List[Contender], List[Workload]]:
    """FLAC decoding alone: ours, libsndfile (soundfile), DALI's decoder."""
    contenders = [
        Contender("native", "bench.contenders:decode_native_factory"),
        Contender("soundfile", "bench.contenders:decode_soundfile_factory"),
        Contender("dali", "bench.contenders:decode_dali_factory"),
    ]
    w = Workload("decode-flac-30s", {"kind": "decode", "clips": list(clips),
                                     "source": clips_desc or f"{len(clips)} clips"}, "clips")
    return contenders, [w]


# =============================================================================== whole model
def model_inputs(params: dict, batch: int) -> dict:
    """The engine's inputs for ``batch`` 30 s windows with every modality present: log-Mel
    (dB-like values), MFCC, TF-IDF rows, 0/1 notes and meter rows (``default_rng(batch)``, the
    same arrays in every process)."""
    import numpy as np

    rng = np.random.default_rng(batch)
    T, B = params["T"], batch
    sym = (rng.random((B, params["S"], T)) < 0.15).astype(np.float32)
    sym[:, 18:] = rng.random((B, params["S"] - 18, T), dtype=np.float32)
    text = (rng.random((B, params["V"])) < 0.2).astype(np.float32) * 0.5
    return {"mfcc": rng.normal(-5, 20, (B, 20, T)).astype(np.float32),
            "logmel": rng.normal(-40, 15, (B, 128, T)).astype(np.float32),
            "text": text, "text_mask": np.ones(B, bool),
            "symbolic": sym, "symbolic_mask": np.ones(B, bool)}


def model_factory(threads: int, engine: str, backend: str, autocast: bool = False,
                  recheck_margin: Optional[float] = None):
    """The engine's runner alone (features in, logits out): ``native`` (the whole model in
    C++; a bf16 engine reruns its close calls in fp32 below ``recheck_margin``, default
    ``EngineConfig.bf16_recheck_margin``, 0: never), ``onnx`` (ONNX Runtime on the exported whole
    model), ``torch`` (eager, fp32, or CPU autocast bf16 with ``autocast``).

    Workloads: ``kind`` "model" (``model_inputs``: random arrays of one shape) or "clips"
    (``params["npz"]``: the inputs of real clips, ``clip_inputs``; one call runs every clip,
    ``batch`` at a time, so a call's time divided by ``params["clips"]`` is the time per
    clip, close calls included)."""
    from mmengine.runtime import registry
    from mmengine.runtime.engine_file import read_engine_file

    ef = read_engine_file(engine)
    module = registry.get_backend(backend).load_module()
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
        runner = module.load(ef, backend="torch", device="cpu")
        info = f"torch {torch.__version__} eager " + ("bf16 autocast" if autocast else "fp32")
    else:
        from mmengine._ext import native_extension

        runner = module.load(ef, threads=threads)
        info = f"{backend} {ef.header['dtype']}" + (
            f", whole model in C++, ISA {native_extension().selected_isa()}"
            if getattr(runner, "whole_model", False) else "")
        if getattr(runner, "recheck", None) is not None:
            if recheck_margin is not None:
                runner.recheck_margin = float(recheck_margin)
            info += (f", close calls (margin < {runner.recheck_margin:g}) rerun in fp32"
                     if runner.recheck_margin > 0 else ", no fp32 recheck")
    if backend == "onnx":
        import onnxruntime as ort

        info = f"onnxruntime {ort.__version__} CPU EP, intra-op {threads} threads"

    def make(params, batch):
        if params.get("kind") == "clips":
            import numpy as np

            with np.load(params["npz"]) as z:
                data = {k: z[k] for k in z.files}
            n = params["clips"]
            chunks = [{k: v[s:s + batch] for k, v in data.items()} for s in range(0, n, batch)]

            def run_clips():
                for x in chunks:
                    if autocast:
                        import torch

                        with torch.autocast("cpu", dtype=torch.bfloat16):
                            runner(x)
                    else:
                        runner(x)
            return run_clips
        x = model_inputs(params, batch)
        if autocast:
            import torch

            def run():
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return runner(x)
            return run
        return lambda: runner(x)

    return info, make


def model_suite(frames: int = FRAMES_30S) -> Tuple[List[Contender], List[Workload], str]:
    """Whole model (features → logits): native fp32/bf16, ONNX Runtime, torch eager fp32 and
    bf16 autocast, all from one model (``build_engines``)."""
    from mmengine.runtime.engine_file import read_header

    engines, desc = build_engines(("native", "native-bf16", "onnx", "torch"))
    dims = read_header(engines["native"])["model"]["dims"]
    contenders = [
        Contender("native-fp32", "bench.contenders:model_factory",
                  {"engine": engines["native"], "backend": "native"}),
        Contender("native-bf16", "bench.contenders:model_factory",
                  {"engine": engines["native-bf16"], "backend": "native"}),
        Contender("onnxruntime", "bench.contenders:model_factory",
                  {"engine": engines["onnx"], "backend": "onnx"}),
        Contender("torch-eager", "bench.contenders:model_factory",
                  {"engine": engines["torch"], "backend": "torch"}),
        Contender("torch-bf16", "bench.contenders:model_factory",
                  {"engine": engines["torch"], "backend": "torch", "autocast": True}),
    ]
    p = {"kind": "model", "T": int(frames), "S": int(dims["symbolic_dim"]),
         "V": int(dims["text_dim"]), "source": desc}
    return contenders, [Workload(f"model-T{frames}", p, "windows")], desc


def e2e_suite(clips: Sequence[str], clips_desc: str = ""
              ) -> Tuple[List[Contender], List[Workload], str]:
    """Contenders, the workload and the engines' description of the end-to-end suite."""
    engines, desc = build_engines(("native", "onnx"))
    contenders = [
        Contender("ours", "bench.contenders:engine_factory",
                  {"engine": engines["native"], "backend": "native", "frontend": "native"}),
        Contender("ours-decode+dali-features+ort", "bench.contenders:engine_factory",
                  {"engine": engines["onnx"], "backend": "onnx", "frontend": "dali"}),
        Contender("dali-plain+ort", "bench.contenders:dali_plain_ort_factory",
                  {"engine": engines["onnx"]}),
    ]
    w = Workload("e2e-30s", {"kind": "e2e", "clips": list(clips),
                             "source": clips_desc or f"{len(clips)} clips"}, "clips")
    return contenders, [w], desc
