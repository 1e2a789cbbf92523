"""Native C++ front end (``mmengine._C.MelFrontend``) against the float64 reference.

The native FFT runs in float32 (as DALI's does), so its rounding noise sits ~140 dB under a
spectrum's peak: broadband signals are compared on every bin, tonal ones on the bins within
100 dB of the clip's peak. Every kernel variant this CPU runs (scalar, AVX2, AVX-512) is tested.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf

from mmengine._ext import native_extension
from audio_fixtures import assert_silence_on_reference_floor, parity_signals, reference_diff
from mmengine.config import AudioConfig, FrontendConfig
from mmengine.data.audio import load_audio
from mmengine.errors import AudioMissingError

native_mod = pytest.importorskip("mmengine.features.native_frontend")
if not native_mod.available():
    pytest.skip("mmengine._C built without the native front end", allow_module_level=True)
NativeFrontend = native_mod.NativeFrontend
C = native_extension()

SR = 22050
ISAS = [i for i in ("scalar", "avx2", "avx512") if i in C.build_info()["isas"]]
VARIANTS = {
    "default": {},
    "htk-none-40": {"mel_scale": "htk", "mel_norm": None, "n_mels": 40, "n_mfcc": 13},
    "reflect": {"pad_mode": "reflect"},
    "uncentered": {"center": False, "chroma_bins": 0},  # the chroma stream needs centring
    "narrow-dbref": {"fmin": 30.0, "fmax": 8000.0, "db_ref": 10.0},
    "nfft1024-hop256": {"n_fft": 1024, "hop_length": 256},  # 512-point FFT: a radix-2 pass
    "nfft512-hop100": {"n_fft": 512, "hop_length": 100, "n_mels": 64},  # odd hop
    "magnitude": {"power": 1.0},
}


@pytest.fixture(params=ISAS)
def isa(request):
    if request.param != "scalar" and request.param not in _runnable():
        pytest.skip(f"this CPU cannot run the {request.param} kernels")
    C.set_isa(request.param)
    yield request.param
    C.set_isa("auto")


def _runnable():
    order = ["scalar", "avx2", "avx512", "avx512bf16"]
    return order[:order.index(C.best_isa()) + 1]


# Tolerances: about 2x the maximum measured over every case and ISA (scalar, AVX2, AVX-512) on
# the 2-core AMD EPYC (AVX-512, AVX512-BF16) development machine, rounded up to 1/2/5 x 10^k. The kernels are
# the same code on an AVX2-only CPU (CI), whose results equal this machine's AVX2 ones.
BROADBAND_DB = 1e-4  # noise/mixture, every bin: measured 2.6e-5 dB (nfft1024-hop256 mixture)
TONAL_DB = 0.05  # tone/chirp, bins within 100 dB of the peak: measured 0.015 dB (scalar,
#                  nfft512-hop100 tone), 0.011 dB AVX2/AVX-512: float32 FFT rounding ~140 dB
#                  under the peak is ~0.01 dB on bins 100 dB down (every bin: up to 16 dB)
MEDIAN_DB = 2e-4  # median over the compared bins: measured 8.2e-5 dB (tonal), 1.1e-6 broadband
MFCC = 2e-4  # broadband: measured 5.3e-5 (narrow-dbref mixture)


def _check(out, y, cfg, what, *, broadband, lm_tol=None, mf_tol=MFCC):
    d, dm, keep = reference_diff(out, y, cfg, what, broadband=broadband)
    lm_tol = lm_tol if lm_tol is not None else BROADBAND_DB if broadband else TONAL_DB
    msg = (f"{what}: log-Mel max |diff| {d[keep].max():.2g} dB "
           f"({'all bins' if broadband else 'bins within 100 dB of the peak'}; every bin "
           f"{d.max():.2g} dB); MFCC {dm.max():.2g}")
    assert d[keep].max() <= lm_tol, msg
    assert np.median(d[keep]) <= MEDIAN_DB, msg
    if broadband:
        assert dm.max() <= mf_tol, msg
    return d[keep].max()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_reference_every_variant_and_isa(rng, isa, variant):
    cfg = dataclasses.replace(FrontendConfig(), **VARIANTS[variant])
    sig = parity_signals(rng, SR)
    outs = NativeFrontend(cfg, num_threads=2).compute(list(sig.values()))
    for (name, y), out in zip(sig.items(), outs):
        _check(out, y, cfg, f"{isa}/{variant}/{name}", broadband=name in ("noise", "mixture"))


def test_lengths_around_block_and_edge_boundaries(rng, isa):
    """Clips shorter than a frame, than a block of W frames, and one sample either side of
    the block/edge boundaries: the partial last block and the padded edge blocks."""
    cfg = FrontendConfig(n_mels=64)
    W = 16
    lengths = [1, 7, 1023, 1024, 2048, 2049, W * 512 - 1, W * 512, W * 512 + 1,
               (W + 1) * 512 + 3, 3 * SR + 17]
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    outs = NativeFrontend(cfg).compute(waves)
    for n, y, out in zip(lengths, waves, outs):
        # measured (every ISA): 2.9e-6 dB log-Mel, 1.0e-5 MFCC
        _check(out, y, cfg, f"{isa}/{n} samples", broadband=True, lm_tol=1e-5, mf_tol=5e-5)


def test_silence_sits_on_the_reference_floor():
    assert_silence_on_reference_floor(lambda cfg, waves: NativeFrontend(cfg).compute(waves))


def test_threads_give_identical_results(rng):
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (3 * SR, 5000, SR)]
    one = NativeFrontend(num_threads=1).compute(waves)
    two = NativeFrontend(num_threads=2).compute(waves)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a["logmel"], b["logmel"])
        np.testing.assert_array_equal(a["mfcc"], b["mfcc"])


def test_from_files_equals_compute_of_decoded_audio(tmp_path, rng):
    paths = []
    for i, (n, sr) in enumerate([(SR * 2, SR), (30000, 44100), (4000, SR)]):
        p = tmp_path / f"c{i}.flac"
        sf.write(p, (0.2 * rng.standard_normal(n)).astype(np.float32), sr, subtype="PCM_16")
        paths.append(p)
    fe = NativeFrontend(num_threads=2)
    got = fe.from_files(paths)
    want = fe.compute([load_audio(p, AudioConfig()) for p in paths])
    assert len(got) == len(paths)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g["logmel"], w["logmel"])
        np.testing.assert_array_equal(g["mfcc"], w["mfcc"])
    assert fe.from_files([]) == []
    with pytest.raises(AudioMissingError, match="nope.wav"):
        fe.from_files([paths[0], tmp_path / "nope.wav"])


def test_bad_inputs_and_unsupported_settings():
    fe = NativeFrontend()
    with pytest.raises(ValueError, match="1-D"):
        fe.compute([np.zeros((2, 100), np.float32)])
    with pytest.raises(ValueError, match="finite"):
        fe.compute([np.full(100, np.nan, np.float32)])
    with pytest.raises(ValueError, match="reflect"):
        NativeFrontend(FrontendConfig(pad_mode="reflect")).compute([np.zeros(1024, np.float32)])
    with pytest.raises(ValueError, match="shorter"):
        NativeFrontend(FrontendConfig(center=False, chroma_bins=0)).compute([np.zeros(100, np.float32)])
    with pytest.raises(ValueError, match="power of two"):
        NativeFrontend(FrontendConfig(n_fft=1000))
    with pytest.raises(ValueError, match="power"):
        NativeFrontend(FrontendConfig(power=1.5))
    with pytest.raises(ValueError, match="rate"):
        NativeFrontend(FrontendConfig(), audio_cfg=AudioConfig(sample_rate=16000))
    assert fe.compute([]) == []
    assert fe.n_frames(22050) == FrontendConfig().n_frames(22050)


def test_auto_picks_native_only_for_supported_settings():
    from mmengine.features.frontend import auto_frontend, get_frontend

    assert auto_frontend(FrontendConfig()) == "native"
    assert auto_frontend(FrontendConfig(n_fft=1000)) == "reference"
    assert get_frontend("auto", FrontendConfig(n_fft=1000)).name == "reference"
    assert get_frontend("native", FrontendConfig()).name == "native"
