"""Audio feature cache and the aligned FeatureSet, on small real audio files."""
from __future__ import annotations

import dataclasses
import json
import os
import warnings

import numpy as np
import pytest
import soundfile as sf

from mmengine.config import AudioConfig, FrontendConfig, TextConfig
from mmengine.data import audio as audio_io
from mmengine.data.manifest import load_manifest
from mmengine.features import cache as cache_mod
from mmengine.features import reference
from mmengine.features.cache import (ExcludedClipsWarning, cache_settings, clip_samples,
                                     compute_or_load_audio_features)
from mmengine.features.dataset import build_feature_set

SR = 8000
ACFG = AudioConfig(sample_rate=SR, clip_seconds=1.0)
FCFG = FrontendConfig(sample_rate=SR, n_fft=256, hop_length=128, n_mels=16, n_mfcc=8)
#: (name, label, seconds, tone Hz, lyrics): one clip shorter than the window, one longer
CLIPS = [
    ("a.wav", "reel", 1.0, 440.0, "merry reel of the piper"),
    ("b.wav", "reel", 0.6, 660.0, None),
    ("c.flac", "reel", 1.5, 550.0, "reel reel"),
    ("d.wav", "jig", 1.2, 330.0, "jig of mayo"),
    ("e.wav", "jig", 1.0, 880.0, "a jig for kerry"),
    ("f.ogg", "jig", 0.8, 220.0, None),
]


def write_tone(path, seconds, hz, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * hz * t) + 0.05 * np.sin(2 * np.pi * 3.1 * hz * t)
    sf.write(str(path), y.astype(np.float32), sr)


def cached(*args, **kw):
    """``compute_or_load_audio_features`` with the reference front end unless one is named
    (these tests count and compare the reference's calls; the default, "auto", picks the
    native one where it is built: ``test_auto_frontend_keys_the_cache_by_its_choice``)."""
    kw.setdefault("frontend", "reference")
    return compute_or_load_audio_features(*args, **kw)


@pytest.fixture
def data(tmp_path):
    rows = ["path,label,lyrics"]
    for name, label, sec, hz, lyr in CLIPS:
        write_tone(tmp_path / name, sec, hz)
        rows.append(f"{name},{label},{lyr or ''}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    return load_manifest(tmp_path / "m.csv")


@pytest.fixture
def spy(monkeypatch):
    """Counts clips passed to the real reference front end (the computation still runs)."""
    calls = []
    real = reference.compute_features

    def counting(y, cfg, **kw):
        calls.append(np.asarray(y).shape[0] if np.ndim(y) == 2 else 1)
        return real(y, cfg, **kw)

    monkeypatch.setattr(reference, "compute_features", counting)
    return calls


def shard_mtimes(cache_dir):
    return {p.name: p.stat().st_mtime_ns for p in cache_dir.glob("shard-*.safetensors")}


def expected_features(path, acfg=ACFG, fcfg=FCFG):
    n = cache_mod.clip_samples(acfg)
    y = audio_io.loop_to_length(audio_io.load_audio(path, acfg), n)
    return reference.compute_features(np.asarray(y, np.float32), fcfg, dtype=np.float32)


def test_first_call_computes_then_hits_cache(data, tmp_path, spy):
    cdir = tmp_path / "cache"
    f1 = cached(data, ACFG, FCFG, cdir, progress=False)
    t = FCFG.n_frames(cache_mod.clip_samples(ACFG))
    assert f1.ids == data.ids and len(f1) == 6 and not f1.failed
    assert f1.mfcc.shape == (6, 8, t) and f1.logmel.shape == (6, 16, t)
    assert f1.mfcc.dtype == np.float32 and f1.logmel.dtype == np.float32
    assert (f1.n_computed, f1.n_reused) == (6, 0) and sum(spy) == 6
    for i, rec in enumerate(data.records):
        want = expected_features(rec.path)
        np.testing.assert_allclose(f1.logmel[i], want["logmel"], atol=1e-3, rtol=0)
        np.testing.assert_allclose(f1.mfcc[i], want["mfcc"], atol=1e-3, rtol=0)
    doc = json.loads((cdir / "manifest.json").read_text())
    assert doc["settings"]["frontend_cfg"]["n_mels"] == 16 and doc["n_frames"] == t
    assert set(doc["items"]) == {str(r.path) for r in data.records}
    before = shard_mtimes(cdir)

    spy.clear()
    f2 = cached(data, ACFG, FCFG, cdir, progress=False)
    assert spy == [] and (f2.n_computed, f2.n_reused) == (0, 6)
    assert shard_mtimes(cdir) == before
    np.testing.assert_array_equal(f2.logmel, f1.logmel)
    np.testing.assert_array_equal(f2.mfcc, f1.mfcc)
    assert not list(cdir.glob("*.tmp"))


def test_changed_settings_recompute_everything(data, tmp_path, spy):
    cdir = tmp_path / "cache"
    cached(data, ACFG, FCFG, cdir, progress=False)
    old = set(shard_mtimes(cdir))
    spy.clear()
    fcfg = FrontendConfig(sample_rate=SR, n_fft=256, hop_length=128, n_mels=20, n_mfcc=8)
    f = cached(data, ACFG, fcfg, cdir, progress=False)
    assert sum(spy) == 6 and f.n_computed == 6 and f.logmel.shape[1] == 20
    assert not old & set(shard_mtimes(cdir)), "stale shards must be deleted"
    spy.clear()
    acfg = AudioConfig(sample_rate=SR, clip_seconds=0.5)
    f = cached(data, acfg, fcfg, cdir, progress=False)
    assert sum(spy) == 6 and f.logmel.shape[2] == fcfg.n_frames(4000)


def test_touched_or_added_file_recomputes_only_that_item(data, tmp_path, spy):
    cdir = tmp_path / "cache"
    f1 = cached(data, ACFG, FCFG, cdir, progress=False)
    target = data.records[3].path
    write_tone(target, 1.0, 1234.0)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    spy.clear()
    f2 = cached(data, ACFG, FCFG, cdir, progress=False)
    assert sum(spy) == 1 and (f2.n_computed, f2.n_reused) == (1, 5)
    keep = [0, 1, 2, 4, 5]
    np.testing.assert_array_equal(f2.logmel[keep], f1.logmel[keep])
    assert np.abs(f2.logmel[3] - f1.logmel[3]).max() > 1.0
    np.testing.assert_allclose(f2.logmel[3], expected_features(target)["logmel"], atol=1e-3)

    write_tone(tmp_path / "g.wav", 1.0, 500.0)
    with open(tmp_path / "m.csv", "a") as fh:
        fh.write("g.wav,jig,\n")
    bigger = load_manifest(tmp_path / "m.csv")
    spy.clear()
    f3 = cached(bigger, ACFG, FCFG, cdir, progress=False)
    assert sum(spy) == 1 and f3.ids == bigger.ids


def test_fully_replaced_shards_are_deleted(data, tmp_path):
    cdir = tmp_path / "cache"
    cached(data, ACFG, FCFG, cdir, progress=False, shard_size=2,
                                   batch_size=2)
    first = set(shard_mtimes(cdir))
    assert len(first) == 3
    for rec in data.records[:2]:
        st = rec.path.stat()
        os.utime(rec.path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    cached(data, ACFG, FCFG, cdir, progress=False, shard_size=2,
                                   batch_size=2)
    now = set(shard_mtimes(cdir))
    assert len(now) == 3 and len(first & now) == 2


def test_corrupt_and_empty_files_are_reported_and_excluded(data, tmp_path, spy):
    data.records[1].path.write_bytes(b"this is not a wav file at all" * 10)
    data.records[4].path.write_bytes(b"")
    cdir = tmp_path / "cache"
    with pytest.warns(ExcludedClipsWarning, match="2 of 6 clip") as rec:
        f = cached(data, ACFG, FCFG, cdir, progress=False)
    msg = str(rec[0].message)
    assert "b.wav" in msg and "e.wav" in msg
    assert set(f.failed) == {"b.wav", "e.wav"}
    assert f.ids == ["a.wav", "c.flac", "d.wav", "f.ogg"] and f.logmel.shape[0] == 4
    assert sum(spy) == 4
    doc = json.loads((cdir / "manifest.json").read_text())
    assert str(data.records[1].path) not in doc["items"]
    spy.clear()
    with pytest.warns(ExcludedClipsWarning):
        f2 = cached(data, ACFG, FCFG, cdir, progress=False)
    assert sum(spy) == 0 and f2.ids == f.ids


def test_mismatched_sample_rates_and_unknown_frontend(data, tmp_path):
    with pytest.raises(ValueError, match="sample_rate"):
        cached(data, ACFG, FrontendConfig(sample_rate=16000), tmp_path)
    with pytest.raises(ValueError, match="unknown front end"):
        cached(data, ACFG, FCFG, tmp_path, frontend="nope")


def test_build_feature_set(data, tmp_path):
    assignment = {"a.wav": "train", "b.wav": "train", "c.flac": "val", "d.wav": "train",
                  "e.wav": "test", "f.ogg": "train"}
    data.records[2].path.write_bytes(b"garbage" * 50)

    def symbolic(rec):
        if rec.labels[0] == "jig":
            return None
        return np.full((3, t), float(len(rec.id)), dtype=np.float32)

    t = FCFG.n_frames(cache_mod.clip_samples(ACFG))
    with pytest.warns(ExcludedClipsWarning):
        fs, vec = build_feature_set(data, assignment, ACFG, FCFG, TextConfig(), tmp_path / "c",
                                    symbolic_fn=symbolic, progress=False)
    assert fs.ids == ["a.wav", "b.wav", "d.wav", "e.wav", "f.ogg"]
    assert set(fs.excluded) == {"c.flac"}
    assert fs.label_names == ["jig", "reel"]
    np.testing.assert_array_equal(fs.labels, [1, 1, 0, 0, 0])
    assert fs.labels.dtype == np.int64
    assert fs.split.tolist() == ["train", "train", "train", "test", "train"]
    assert fs.text_field == "lyrics" and vec is not None
    assert "kerry" not in vec.vocabulary and "mayo" in vec.vocabulary
    np.testing.assert_array_equal(fs.text_mask, [True, False, True, True, False])
    assert fs.text.shape == (5, vec.n_features) and fs.text.dtype == np.float32
    assert fs.symbolic.shape == (5, 3, t)
    np.testing.assert_array_equal(fs.symbolic_mask, [True, True, False, False, False])
    assert np.all(fs.symbolic[~fs.symbolic_mask] == 0)

    train = fs.subset("train")
    assert train.ids == ["a.wav", "b.wav", "d.wav", "f.ogg"] and len(train) == 4
    assert train.mfcc.shape == (4, 8, t) and train.text.shape[0] == 4
    np.testing.assert_array_equal(train.logmel[2], fs.logmel[2])
    assert len(fs.subset("val")) == 0
    with pytest.raises(ValueError):
        fs.subset("dev")


def test_build_feature_set_without_text(data, tmp_path):
    assignment = {r.id: "train" for r in data.records}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fs, vec = build_feature_set(data, assignment, ACFG, FCFG, TextConfig(), tmp_path / "c",
                                    text_field=None, progress=False)
    assert vec is None and fs.text is None and fs.text_mask is None and fs.symbolic is None
    with pytest.raises(ValueError, match="no split"):
        build_feature_set(data, {}, ACFG, FCFG, TextConfig(), tmp_path / "c", progress=False)


@pytest.mark.parametrize("frontend", ["native", "dali"])
def test_other_frontends_fill_their_own_cache(data, tmp_path, frontend):
    """The native and DALI front ends compute the same features into a cache keyed by their
    name (switching front ends recomputes, never mixes)."""
    if frontend == "dali":
        pytest.importorskip("nvidia.dali")
    else:
        from mmengine.features.native_frontend import available

        if not available():
            pytest.skip("mmengine._C built without the native front end")
    cdir = tmp_path / "cache"
    fcfg = FCFG if frontend == "native" else dataclasses.replace(FCFG, chroma_bins=0)  # DALI: none
    ref = cached(data, ACFG, fcfg, tmp_path / "ref", progress=False)
    got = cached(data, ACFG, fcfg, cdir, progress=False,
                                         frontend=frontend)
    assert got.ids == ref.ids and got.n_computed == 6
    # float32 FFTs: bins near the -100 dB floor of these tonal clips differ by up to ~0.02 dB
    # (precision is tested in test_frontend_native.py / test_frontend_dali.py / test_chroma.py)
    np.testing.assert_allclose(got.logmel, ref.logmel, atol=0.05, rtol=0)
    np.testing.assert_allclose(got.mfcc, ref.mfcc, atol=0.05, rtol=0)
    if fcfg.chroma_bins:
        np.testing.assert_allclose(got.chroma, ref.chroma, atol=0.05, rtol=0)
    else:
        assert got.chroma is None and ref.chroma is None
    doc = json.loads((cdir / "manifest.json").read_text())
    assert doc["settings"]["frontend"] == frontend


def test_chroma_is_cached_with_the_other_features_and_its_absence_keeps_old_caches(data,
                                                                                  tmp_path):
    """The pitch stream travels through the cache like the log-Mel (computed once, read back
    equal); a config without it has the settings a cache written before the stream had (no
    chroma fields), so such caches stay valid."""
    first = cached(data, ACFG, FCFG, tmp_path / "c", progress=False)
    again = cached(data, ACFG, FCFG, tmp_path / "c", progress=False)
    assert first.chroma.shape == (6, 12, first.logmel.shape[-1]) and again.n_reused == 6
    np.testing.assert_array_equal(again.chroma, first.chroma)
    np.testing.assert_array_equal(again.logmel, first.logmel)
    clip = data.records[0]
    y = audio_io.loop_to_length(audio_io.load_audio(clip.path, ACFG), clip_samples(ACFG))
    np.testing.assert_allclose(first.chroma[0], reference.chroma(np.asarray(y, np.float32),
                                                                  FCFG), atol=1e-5)
    off = dataclasses.replace(FCFG, chroma_bins=0)
    settings = cache_settings(ACFG, off, "reference")["frontend_cfg"]
    assert not any(k.startswith("chroma") for k in settings)
    assert "chroma_n_fft" in cache_settings(ACFG, FCFG, "reference")["frontend_cfg"]


def test_auto_frontend_keys_the_cache_by_its_choice(data, tmp_path):
    """The default front end of the cache ("auto") is the one an engine uses by default:
    native where the extension is built, else the reference; the cache records the name it
    resolved to, and its features are the reference's within float32 FFT rounding."""
    from mmengine.features.frontend import auto_frontend

    got = compute_or_load_audio_features(data, ACFG, FCFG, tmp_path / "auto", progress=False)
    doc = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    assert doc["settings"]["frontend"] == auto_frontend(FCFG) in ("native", "reference")
    ref = cached(data, ACFG, FCFG, tmp_path / "ref", progress=False)
    np.testing.assert_allclose(got.logmel, ref.logmel, atol=0.05, rtol=0)
    np.testing.assert_allclose(got.chroma, ref.chroma, atol=0.05, rtol=0)
