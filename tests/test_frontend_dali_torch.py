"""DALI front end → torch through DLPack (``from_*_torch``, ``from_*_padded``, ``dali_to_torch``).

CPU tests: the torch outputs equal the numpy outputs (``from_arrays`` / ``from_files``) element
for element and alias DALI's buffers (zero-copy). GPU tests (``@pytest.mark.gpu``): the tensors
are on ``cuda:0``, alias DALI's device buffers, no feature passes through host memory (no
device-to-host copy in a CUDA profile), and the values match the CPU front end and the reference
within the tolerances of ``test_frontend_dali.py``.
"""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from mmengine.config import FrontendConfig

#: DALI computes the log-Mel and MFCC only (no operator applies the chroma filter bank): its
#: configs leave the pitch stream out
MEL_ONLY = FrontendConfig(chroma_bins=0)
from mmengine.errors import AudioCorruptError, AudioMissingError

pytest.importorskip("nvidia.dali")
import mmengine.features.dali as dali_mod  # noqa: E402
import mmengine.features.dali_torch as dali_torch_mod  # noqa: E402
from mmengine.features.dali import DaliFrontend, dali_to_torch, pad_features  # noqa: E402

SR = 22050


def _waves(rng, sizes=(SR, 777, 3001, 2 * SR + 5, SR // 2)):
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in sizes]


def _same(torch_items, np_items):
    assert len(torch_items) == len(np_items)
    for i, (t, a) in enumerate(zip(torch_items, np_items)):
        for k in ("logmel", "mfcc"):
            assert isinstance(t[k], torch.Tensor) and t[k].dtype == torch.float32, (i, k)
            np.testing.assert_array_equal(t[k].cpu().numpy(), a[k], err_msg=f"clip {i} {k}")


@pytest.fixture
def record_dlpack(monkeypatch):
    """Wrap ``dali_to_torch``: a list of (DALI tensor type, its data_ptr, torch tensor)."""
    seen = []

    def spy(t):
        out = dali_to_torch(t)
        seen.append((type(t).__name__, int(t.data_ptr()), out))
        return out

    # the torch outputs (DaliTorchOutputs) call it in dali_torch, where it is defined
    monkeypatch.setattr(dali_torch_mod, "dali_to_torch", spy)
    return seen


def _files(rng, tmp_path):
    """Mono FLAC, stereo WAV, a 44.1 kHz WAV (resampled) and a short WAV."""
    a, b = _waves(rng, (2 * SR, 2 * SR))
    sf.write(tmp_path / "mono.flac", a, SR, subtype="PCM_24")
    sf.write(tmp_path / "stereo.wav", np.stack([a, b], axis=1), SR, subtype="FLOAT")
    sf.write(tmp_path / "hi.wav", (0.1 * rng.standard_normal(44100)).astype(np.float32), 44100,
             subtype="FLOAT")
    sf.write(tmp_path / "short.wav", b[:5000], SR, subtype="FLOAT")
    return [tmp_path / n for n in ("mono.flac", "stereo.wav", "hi.wav", "short.wav")]


# ---------------------------------------------------------------------- CPU
def test_from_arrays_torch_equals_from_arrays_and_aliases_dali(rng, record_dlpack):
    cfg = FrontendConfig(n_mels=64, chroma_bins=0)
    waves = _waves(rng)
    fe = DaliFrontend(cfg, batch_size=2)  # 5 clips: 3 iterations, the last one partial
    got = fe.from_arrays_torch(waves)
    assert fe.torch_device == torch.device("cpu")
    assert all(t.device.type == "cpu" for it in got for t in it.values())
    for i, it in enumerate(got):
        assert it["logmel"].shape == (64, cfg.n_frames(waves[i].size))
    # every tensor is a view of DALI's output buffer, not a copy
    assert len(record_dlpack) == 2 * len(waves)
    assert all(kind == "TensorCPU" and t.data_ptr() == ptr for kind, ptr, t in record_dlpack)
    # compared after all iterations ran (and after another call): the views stay valid
    ref = DaliFrontend(cfg, batch_size=2).from_arrays(waves)
    fe.from_arrays([np.ones(SR, np.float32)] * 3)
    _same(got, ref)


def test_from_files_torch_equals_from_files(rng, tmp_path):
    paths = _files(rng, tmp_path)
    fe = DaliFrontend(MEL_ONLY, batch_size=3)
    _same(fe.from_files_torch(paths), fe.from_files(paths))


def test_padded_batches_equal_the_per_clip_outputs(rng, tmp_path):
    cfg = MEL_ONLY
    waves = _waves(rng)
    ref = DaliFrontend(cfg).from_arrays(waves)
    for bs in (2, 8):  # several iterations, one iteration
        for pad in (0.0, -100.0):
            out = DaliFrontend(cfg, batch_size=bs).from_arrays_padded(waves, pad_value=pad)
            t_max = max(cfg.n_frames(w.size) for w in waves)
            assert out["logmel"].shape == (len(waves), cfg.n_mels, t_max)
            assert out["mfcc"].shape == (len(waves), cfg.n_mfcc, t_max)
            assert out["lengths"].dtype == torch.int64
            assert out["lengths"].tolist() == [cfg.n_frames(w.size) for w in waves]
            for i, r in enumerate(ref):
                n = r["logmel"].shape[1]
                for k in ("logmel", "mfcc"):
                    np.testing.assert_array_equal(out[k][i, :, :n].numpy(), r[k])
                    assert (out[k][i, :, n:] == pad).all()
            np.testing.assert_array_equal(out["logmel"].numpy(), pad_features(
                DaliFrontend(cfg).from_arrays_torch(waves), pad)["logmel"].numpy())
    paths = _files(rng, tmp_path)
    fe = DaliFrontend(cfg, batch_size=3)
    out = fe.from_files_padded(paths)
    for i, r in enumerate(fe.from_files(paths)):
        assert out["lengths"][i] == r["logmel"].shape[1]
        np.testing.assert_array_equal(out["mfcc"][i, :, :r["mfcc"].shape[1]].numpy(), r["mfcc"])


def test_equal_length_batch_in_one_iteration_is_a_zero_copy_view(rng, record_dlpack):
    cfg = MEL_ONLY
    waves = _waves(rng, (SR,) * 4)
    out = DaliFrontend(cfg, batch_size=4).from_arrays_padded(waves)
    frames = cfg.n_frames(SR)
    assert [(kind, tuple(t.shape)) for kind, _, t in record_dlpack] == [
        ("TensorCPU", (4, cfg.n_mels, frames)), ("TensorCPU", (4, cfg.n_mfcc, frames))]
    assert out["logmel"].data_ptr() == record_dlpack[0][1]
    assert out["mfcc"].data_ptr() == record_dlpack[1][1]
    _same([{k: out[k][i] for k in ("logmel", "mfcc")} for i in range(4)],
          DaliFrontend(cfg).from_arrays(waves))
    # equal lengths over several iterations: merged into one torch buffer, same values
    merged = DaliFrontend(cfg, batch_size=3).from_arrays_padded(waves)
    np.testing.assert_array_equal(merged["logmel"].numpy(), out["logmel"].numpy())


def test_torch_path_errors_name_the_file(rng, tmp_path):
    fe = DaliFrontend(MEL_ONLY, batch_size=4)
    good = tmp_path / "good.wav"
    sf.write(good, (0.1 * rng.standard_normal(SR)).astype(np.float32), SR)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" + b"\x01" * 64)
    with pytest.raises(AudioMissingError, match="nope.wav"):
        fe.from_files_torch([good, tmp_path / "nope.wav"])
    with pytest.raises(AudioCorruptError, match="junk.wav"):
        fe.from_files_padded([good, junk])
    out = fe.from_files_torch([good])[0]  # the pipeline is rebuilt after DALI's failure
    assert out["logmel"].shape == (128, MEL_ONLY.n_frames(SR))
    with pytest.raises(ValueError, match="waveform 1"):
        fe.from_arrays_torch([np.zeros(100, np.float32), np.zeros(0, np.float32)])
    with pytest.raises(ValueError, match="no clips"):
        fe.from_arrays_padded([])


def test_dali_to_torch_without_dlpack_wraps_the_array_interface(rng):
    """DALI before ``__dlpack__`` on tensors: CPU tensors through ``__array_interface__``."""
    fe = DaliFrontend(MEL_ONLY, batch_size=1)
    lm, _ = fe._execute("arrays", {"audio": _waves(rng, (SR,))})

    class NoDlpack:  # a TensorCPU as older DALI exposes it: no DLPack methods
        def __init__(self, t):
            self._t = t
            self.__array_interface__ = t.__array_interface__

    t = dali_to_torch(NoDlpack(lm[0]))
    assert t.data_ptr() == lm[0].data_ptr()
    np.testing.assert_array_equal(t.numpy(), np.array(lm.at(0)))


# ---------------------------------------------------------------------- GPU
def _signals(rng, n=2 * SR):
    t = np.arange(n) / SR
    sig = {"noise": 0.1 * rng.standard_normal(n), "tone": 0.5 * np.sin(2 * np.pi * 440.0 * t),
           "mixture": 0.2 * np.sin(2 * np.pi * 220.0 * t) + 0.05 * rng.standard_normal(n)}
    return {k: v.astype(np.float32) for k, v in sig.items()}


def _close_to_cpu(gpu, cpu, what, broadband, tol=0.01):
    """test_frontend_dali's GPU bounds (``GPU``: never measured, DALI cannot travel to the GPU
    machines): 0.01 dB log-Mel (tonal: within 100 dB of the peak), median <= 1e-3 dB, MFCC 0.01
    (broadband)."""
    d = np.abs(gpu["logmel"] - cpu["logmel"])
    keep = np.ones_like(d, bool) if broadband else cpu["logmel"] > cpu["logmel"].max() - 100.0
    dm = np.abs(gpu["mfcc"] - cpu["mfcc"]).max()
    msg = (f"{what}: log-Mel max |diff| {d[keep].max():.2g} dB (every bin {d.max():.2g}), "
           f"MFCC {dm:.2g}")
    assert d[keep].max() <= tol and np.median(d) <= 1e-3, msg
    if broadband:
        assert dm <= tol, msg


@pytest.mark.gpu
def test_gpu_torch_outputs_stay_on_the_device(rng, tmp_path, record_dlpack, monkeypatch):
    host_copies = []
    real_host = dali_mod._host_samples

    def host_spy(tl, n):
        host_copies.append(type(tl).__name__)
        return real_host(tl, n)

    monkeypatch.setattr(dali_mod, "_host_samples", host_spy)
    cfg = MEL_ONLY
    sig = _signals(rng)
    fe = DaliFrontend(cfg, device="gpu", batch_size=2)
    assert fe.torch_device == torch.device("cuda", 0)
    got = fe.from_arrays_torch(list(sig.values()))
    sf.write(tmp_path / "a.flac", sig["noise"], SR, subtype="PCM_24")
    got_file = fe.from_files_torch([tmp_path / "a.flac"])[0]
    for it in got + [got_file]:
        for t in it.values():
            assert t.is_cuda and t.device == torch.device("cuda", 0)
    # each tensor aliases a DALI device buffer (DLPack, zero-copy); no GPU list went to the host
    assert record_dlpack and all(kind == "TensorGPU" for kind, _, _ in record_dlpack)
    from nvidia.dali.tensors import TensorGPU

    if hasattr(TensorGPU, "__dlpack__"):  # else DALI < 1.46: a device-to-device copy
        assert all(t.data_ptr() == ptr for _, ptr, t in record_dlpack)
    assert not [k for k in host_copies if k.endswith("GPU")], host_copies  # only rate/length
    torch.cuda.synchronize()
    cpu = DaliFrontend(cfg, batch_size=2).from_arrays(list(sig.values()))
    for (name, _), g, c in zip(sig.items(), got, cpu):
        _close_to_cpu({k: v.cpu().numpy() for k, v in g.items()}, c, f"gpu {name}",
                      broadband=name != "tone")
    from test_frontend_dali import GPU, _check  # the reference comparison of the numpy GPU test

    for (name, y), g in zip(sig.items(), got):
        _check({k: v.cpu().numpy() for k, v in g.items()}, y, cfg, f"gpu torch {name}",
               broadband=name != "tone", **GPU)
    flac = sf.read(tmp_path / "a.flac", dtype="float32")[0]
    _check({k: v.cpu().numpy() for k, v in got_file.items()}, flac, cfg, "gpu torch flac",
           broadband=True, **GPU)


@pytest.mark.gpu
def test_gpu_padded_batch_matches_per_clip_outputs(rng, tmp_path):
    cfg = MEL_ONLY
    paths = _files(rng, tmp_path)
    fe = DaliFrontend(cfg, device="gpu", batch_size=3)
    out = fe.from_files_padded(paths)  # two iterations: merged on the device
    assert out["logmel"].is_cuda and out["mfcc"].is_cuda and out["lengths"].is_cuda
    per_clip = fe.from_files_torch(paths)
    cpu = DaliFrontend(cfg, batch_size=3).from_files(paths)
    for i, (g, c) in enumerate(zip(per_clip, cpu)):
        n = c["logmel"].shape[1]
        assert int(out["lengths"][i]) == n
        for k in ("logmel", "mfcc"):
            # GPU only, never run (DALI cannot travel to the GPU machines): not measured
            torch.testing.assert_close(out[k][i, :, :n], g[k], atol=1e-4, rtol=0)
            assert (out[k][i, :, n:] == 0).all()
        _close_to_cpu({k: v.cpu().numpy() for k, v in g.items()}, c, paths[i].name,
                      broadband=True)
    # equal lengths, one iteration: DALI's dense GPU output itself
    waves = _waves(rng, (SR,) * 3)
    dense = fe.from_arrays_padded(waves)
    assert dense["logmel"].is_cuda and dense["logmel"].shape == (3, cfg.n_mels, cfg.n_frames(SR))
    for i, c in enumerate(DaliFrontend(cfg).from_arrays(waves)):
        _close_to_cpu({k: dense[k][i].cpu().numpy() for k in ("logmel", "mfcc")}, c,
                      f"dense {i}", broadband=True)


@pytest.mark.gpu
def test_gpu_torch_path_copies_nothing_to_the_host(rng):
    """CUDA profile (CUPTI sees DALI's copies too): the numpy path copies the features device →
    host (the control); the torch path must not copy anything device → host."""
    from torch.profiler import ProfilerActivity, profile

    fe = DaliFrontend(MEL_ONLY, device="gpu", batch_size=4)
    waves = _waves(rng, (SR,) * 4)
    fe.from_arrays(waves)
    fe.from_arrays_torch(waves)  # warm: pipelines built, allocations made
    torch.cuda.synchronize()

    def dtoh(fn):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        return [e.name for e in prof.events() if "memcpy" in e.name.lower()
                and ("dtoh" in e.name.lower() or "device -> pageable" in e.name.lower()
                     or "device -> pinned" in e.name.lower())]

    control = dtoh(lambda: fe.from_arrays(waves))
    if not control:
        pytest.skip("the CUDA profiler recorded no device-to-host copy of the numpy path: "
                    "CUPTI does not see DALI's copies here, so the check would prove nothing")
    keep = []
    assert dtoh(lambda: keep.append(fe.from_arrays_padded(waves))) == []
    assert dtoh(lambda: keep.append(fe.from_arrays_torch(waves))) == []
