"""Property fuzzing of the Python input parsers with Hypothesis (issue 15, item 5).

    python tests/fuzz/pyfuzz.py [--targets audio,manifest,...] [--seconds 60] [--seed 0]
                                [--out DIR] [--headroom-mb 3072] [--example-timeout 10]

The property, for every target: any bytes give either a result or a typed mmengine error
(``mmengine.errors.MMEngineError``), never another exception, a hang (an example running past
``--example-timeout`` seconds) or a huge allocation (the process's address space is capped at
its size after setup plus ``--headroom-mb``: an allocation past that is a ``MemoryError``).

Targets (each gets an equal share of ``--seconds``):

audio          ``load_audio``, the streamed ``WindowStream`` (the same windows bit for bit, or an
               error of the same class) and the container walkers (``_structure_error`` for WAV, Ogg,
               FLAC, MPEG) on mutated real files (WAV 16/24/float, RF64, AIFF, FLAC of known and
               unknown length, Ogg Vorbis, MP3) and on magic bytes + random bytes.
manifest       ``load_manifest`` (training) and ``Engine.classify`` of a manifest (inference)
               on generated CSV/JSONL whose cells point at good and bad files (a FIFO, a
               directory, ``/dev/zero``, missing paths) or hold hostile values, raw bytes too.
engine_header  ``engine_file.decode`` / ``read_header`` on mutated real engine files.
engine         ``Engine.load`` of a real engine whose JSON header has values replaced (any JSON
               value, huge numbers, deep nesting, hostile regular expressions) and, when it
               loads, ``classify`` of a short tone with lyrics.
checkpoint     ``load_checkpoint`` of a real checkpoint folder whose ``checkpoint.json`` is
               mutated the same way (``weights_file`` pointing elsewhere too).
midi           ``symbolic_features`` / ``symbolic_windows`` on mutated real MIDI files and on
               generated MIDI with hostile header fields, delta times and tempos.

A failure prints the traceback and copies the failing example's files (the shrunk one) to
``--out/<target>/``; the exit status is 1 when any target failed. Seeds are fixed: the same
``--seed`` explores the same examples in the same order (as far as the time budget reaches).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Dict

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests"))

INTERESTING_INTS = (0, 1, 2, 7, 8, 15, 16, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF,
                    0x10000, 0x7FFFFF, 0xFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
HOSTILE_VALUES = (0, -1, 1, 2 ** 31, 2 ** 63, 10 ** 30, -10 ** 30, 1e308, -1e308, 1e-320, 0.5,
                  "", "x" * 10000, "(a+)+$", "((a*)*)*b", "(?:x+x+)+y", "\\", "[", "(?P<",
                  "../../../../etc/passwd", "/dev/zero", "/dev/stdin", None, True, False, [],
                  {}, [0] * 5000, "NaN", "Infinity", {"__class__": "os.system"})


class Hang(Exception):
    """An example ran past the per-example time limit."""


@contextlib.contextmanager
def time_limit(seconds: float):
    def on_alarm(signum, frame):
        raise Hang(f"example ran longer than {seconds:g} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------- mutations

def mutation_strategy(st, header_bytes: int = 64):
    """A list of byte-level edits, applied by ``apply_mutations``."""
    pos = st.one_of(st.integers(0, header_bytes - 1), st.integers(0, 1 << 16))
    op = st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(1, 255)),
        st.tuples(st.just("set"), pos, st.sampled_from(INTERESTING_INTS),
                  st.sampled_from(["<I", ">I", "<H", ">H", "B", "<Q"])),
        st.tuples(st.just("truncate"), st.integers(0, 1 << 16)),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=64)),
        st.tuples(st.just("delete"), pos, st.integers(1, 64)),
        st.tuples(st.just("repeat"), pos, st.integers(1, 64), st.integers(2, 50)),
    )
    return st.lists(op, max_size=6)


def apply_mutations(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op in ops:
        if not b and op[0] != "insert":
            continue
        kind = op[0]
        p = op[1] % max(len(b), 1)
        if kind == "flip":
            b[p] ^= op[2]
        elif kind == "set":
            fmt = op[3]
            size = struct.calcsize(fmt)
            v = op[2] & ((1 << (8 * size)) - 1)
            chunk = struct.pack(fmt, v)
            b[p:p + size] = chunk
        elif kind == "truncate":
            del b[op[1] % (len(b) + 1):]
        elif kind == "insert":
            b[p:p] = op[2]
        elif kind == "delete":
            del b[p:p + op[2]]
        elif kind == "repeat":
            b[p:p] = bytes(b[p:p + op[2]]) * op[3]
    return bytes(b)


def json_values(st):
    leaves = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                       st.floats(allow_nan=False, allow_infinity=False),
                       st.text(max_size=40), st.sampled_from(HOSTILE_VALUES))
    return st.recursive(leaves, lambda c: st.one_of(st.lists(c, max_size=4),
                                                    st.dictionaries(st.text(max_size=8), c,
                                                                    max_size=4)),
                        max_leaves=12)


def _paths(doc, prefix=()):
    """Every (key path) inside nested dicts/lists of ``doc``."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append(prefix + (k,))
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:8]):
            out.append(prefix + (i,))
            out.extend(_paths(v, prefix + (i,)))
    return out


DEEP = "[" * 100000 + "]" * 100000  # nesting no JSON parser should follow recursively


def doc_edit_strategy(st):
    """Edits of a JSON document: (path index, action, value)."""
    return st.lists(st.tuples(st.integers(0, 10 ** 6),
                              st.sampled_from(["replace", "replace", "delete", "deep", "scale"]),
                              json_values(st)), min_size=1, max_size=4)


def edit_doc(doc, edits) -> str:
    """JSON text of ``doc`` after ``edits``; a "deep" edit splices a deeply nested array in."""
    import copy

    doc = copy.deepcopy(doc)
    deep_marker = None
    for idx, action, value in edits:
        paths = _paths(doc)
        if not paths:
            break
        path = paths[idx % len(paths)]
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        if action == "delete":
            del parent[key]
        elif action == "deep":
            deep_marker = "__DEEP_NESTING__"
            parent[key] = deep_marker
        elif action == "scale" and isinstance(parent[key], (int, float)) \
                and not isinstance(parent[key], bool):
            parent[key] = parent[key] * 10 ** 6 + 1
        else:  # a copy: a shared value (HOSTILE_VALUES) edited later would make a cycle
            parent[key] = copy.deepcopy(value)
    text = json.dumps(doc)
    if deep_marker:
        text = text.replace(json.dumps(deep_marker), DEEP, 1)
    return text


# ----------------------------------------------------------------------------- fixtures

class Fixtures:
    """Real files every target mutates, made once in ``root``."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    # audio
    def audio_seeds(self) -> Dict[str, bytes]:
        import soundfile as sf
        from audio_fixtures import tone

        rng = np.random.default_rng(0)
        y = tone(440.0, 8000, 0.1)
        out = {}

        def put(name, data, sr, fmt, subtype=None):
            buf = io.BytesIO()
            sf.write(buf, data, sr, format=fmt, subtype=subtype)
            out[name] = buf.getvalue()

        put("pcm16.wav", y, 8000, "WAV", "PCM_16")
        put("pcm24_stereo.wav", np.stack([y, -y], 1), 8000, "WAV", "PCM_24")
        nan = y.astype(np.float32).copy()
        nan[100] = np.nan
        put("float_nan.wav", nan, 8000, "WAV", "FLOAT")
        put("rf64.wav", y, 8000, "RF64", "PCM_16")
        put("pcm16.aiff", y, 8000, "AIFF", "PCM_16")
        put("pcm16.flac", y, 8000, "FLAC", "PCM_16")
        put("noise.ogg", rng.uniform(-0.3, 0.3, 4000), 8000, "OGG", "VORBIS")
        put("tone.mp3", tone(440.0, 16000, 0.3), 16000, "MP3", "MPEG_LAYER_III")
        for p in sorted((HERE / "corpus" / "flac").glob("*.flac")):
            out["corpus_" + p.name] = p.read_bytes()
        return out

    def tone_wav(self) -> Path:
        from audio_fixtures import write_tone

        p = self.root / "tone.wav"
        if not p.exists():
            write_tone(p, sr=8000, seconds=0.6)
        return p

    def midi_seeds(self) -> Dict[str, bytes]:
        import mido

        out = {}
        for name, ttype, tpb in (("type1.mid", 1, 480), ("type0.mid", 0, 96)):
            mid = mido.MidiFile(type=ttype, ticks_per_beat=tpb)
            tr = mido.MidiTrack()
            mid.tracks.append(tr)
            tr.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
            tr.append(mido.MetaMessage("time_signature", numerator=6, denominator=8, time=0))
            tr.append(mido.Message("program_change", program=40, time=0))
            for i, pitch in enumerate((62, 64, 66, 67, 69, 71, 73, 74)):
                tr.append(mido.Message("note_on", note=pitch, velocity=90, time=0 if i == 0
                                       else tpb // 2))
                tr.append(mido.Message("note_off", note=pitch, velocity=0, time=tpb // 2))
            if ttype == 1:
                drums = mido.MidiTrack()
                mid.tracks.append(drums)
                drums.append(mido.Message("note_on", channel=9, note=36, velocity=100, time=0))
                drums.append(mido.Message("note_off", channel=9, note=36, velocity=0,
                                          time=tpb))
            buf = io.BytesIO()
            mid.save(file=buf)
            out[name] = buf.getvalue()
        return out

    def tiny_model(self):
        import torch
        from mmengine.config import first_design
        from mmengine.models import build_model

        torch.manual_seed(0)
        cfg = first_design(hidden_size=8, num_layers=1, stem_stages=1, mfcc_channels=4,
                           mel_channels=4, text_dim=3, pooling="mean",
                           modalities=("mfcc", "mel", "text"))
        return build_model(cfg, dict(n_mfcc=5, n_mels=8, text_dim=4, symbolic_dim=0,
                                     n_classes=3, multilabel=False)).eval()

    @staticmethod
    def vectorizer_json() -> dict:
        from mmengine.config import TextConfig, to_dict
        from mmengine.features.text import FORMAT, TOKEN_PATTERN

        return {"format": FORMAT, "config": to_dict(TextConfig()), "token_pattern": TOKEN_PATTERN,
                "vocabulary": ["jig", "reel", "sea", "song"], "idf": [1.0, 1.5, 2.0, 2.5]}

    def engine(self) -> Path:
        from mmengine.config import AudioConfig, FrontendConfig
        from mmengine.export import build_engine_from_model

        p = self.root / "tiny.mme"
        if not p.exists():
            build_engine_from_model(
                self.tiny_model(), p, backend="native", labels=["a", "b", "c"],
                audio_cfg=AudioConfig(sample_rate=8000, clip_seconds=0.25),
                frontend_cfg=FrontendConfig(sample_rate=8000, n_fft=256, hop_length=128,
                                            n_mels=8, n_mfcc=5),
                text=self.vectorizer_json(), text_field="lyrics")
        return p

    def checkpoint(self) -> Path:
        from mmengine.checkpoint import save_checkpoint

        d = self.root / "ckpt"
        if not (d / "checkpoint.json").exists():
            d.mkdir(parents=True, exist_ok=True)
            save_checkpoint(d, self.tiny_model(), label_names=["a", "b", "c"],
                            text_vectorizer=self.vectorizer_json())
        return d


# ----------------------------------------------------------------------------- targets

def check_entries(results) -> None:
    """Every per-item error of a classify result is a typed mmengine error."""
    import mmengine.errors as errors

    typed = {n for n, c in vars(errors).items()
             if isinstance(c, type) and issubclass(c, errors.MMEngineError)}
    for r in results:
        if not getattr(r, "ok", True):
            assert r.error_type in typed, f"item error of type {r.error_type}: {r.error}"


class Target:
    """One fuzz target: ``strategy(st)`` draws a case, ``check(case, work)`` runs it with the
    files it needs written under ``work`` (kept as the finding when it fails)."""

    name = ""

    def __init__(self, fx: Fixtures):
        self.fx = fx
        self.outcomes: Dict[str, int] = {}

    def expect(self, fn: Callable):
        """``fn()``, or None when it raised a typed mmengine error; the outcome is counted
        ("ok" or the error's class) so that a run shows how deep its examples got."""
        from mmengine.errors import MMEngineError

        try:
            out = fn()
        except MMEngineError as exc:
            key = type(exc).__name__
            self.outcomes[key] = self.outcomes.get(key, 0) + 1
            return None
        self.outcomes["ok"] = self.outcomes.get("ok", 0) + 1
        return out

    def setup(self) -> None:
        pass

    def strategy(self, st):
        raise NotImplementedError

    def check(self, case, work: Path) -> None:
        raise NotImplementedError


MAGICS = (b"RIFF\x24\x00\x00\x00WAVEfmt ", b"RIFX\x00\x00\x00\x24WAVE", b"RF64\xff\xff\xff\xffWAVEds64",
          b"OggS\x00\x02", b"fLaC\x00\x00\x00\x22", b"fLaC\x80\x00\x00\x22", b"ID3\x04\x00\x00",
          b"\xff\xfb\x90\x64", b"\xff\xf3", b"FORM\x00\x00\x00\x00AIFF", b"MThd\x00\x00\x00\x06",
          b"\x00\x00\x00\x18ftypM4A ", b"")


class AudioTarget(Target):
    name = "audio"

    def setup(self):
        self.seeds = self.fx.audio_seeds()
        self.names = sorted(self.seeds)

    def strategy(self, st):
        ext = st.sampled_from([".wav", ".flac", ".ogg", ".mp3", ".aiff", ".bin", ""])
        mutated = st.tuples(st.just("seed"), st.sampled_from(self.names),
                            mutation_strategy(st), ext)
        raw = st.tuples(st.just("raw"), st.sampled_from(MAGICS), st.binary(max_size=1024), ext)
        return st.one_of(mutated, mutated, mutated, raw)

    def materialize(self, case) -> tuple:
        if case[0] == "seed":
            return apply_mutations(self.seeds[case[1]], case[2]), case[3]
        return case[1] + case[2], case[3]

    def check(self, case, work):
        from mmengine.config import AudioConfig
        from mmengine.data import audio
        from mmengine.errors import AudioError

        data, ext = self.materialize(case)
        path = work / ("input" + ext)
        path.write_bytes(data)
        cfg = AudioConfig(sample_rate=8000)
        y = self.expect(lambda: audio.load_audio(path, cfg))
        if y is not None:
            assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.ndim == 1, y
            assert y.size > 0 and np.isfinite(y).all() and np.abs(y).max() <= 1.0
        # the engine's streamed path (WindowStream): the windows of windows(load_audio(...))
        # bit for bit, or a typed error of the same class where load_audio raised one
        want_error = None
        if y is None:
            try:
                audio.load_audio(path, cfg)
            except AudioError as exc:
                want_error = type(exc).__name__
        got, got_error = [], None
        try:
            got = audio.stream_windows(path, cfg, 3000)
        except AudioError as exc:
            got_error = type(exc).__name__
        assert got_error == want_error, (got_error, want_error)
        if y is not None:
            ref = audio.windows(y, 3000)
            assert len(got) == len(ref) and all(
                a.dtype == np.float32 and np.array_equal(a, b) for a, b in zip(got, ref)), \
                (len(got), len(ref))
        if data:
            for kind in ("wav", "ogg", "flac", "mp3"):
                found = audio._structure_error(str(path), kind)
                assert found is None or isinstance(found, AudioError), found


class ManifestTarget(Target):
    name = "manifest"
    COLUMNS = ("path", "id", "label", "labels", "lyrics", "lyrics_path", "title", "midi_path",
               "split", "extra")

    def setup(self):
        from audio_fixtures import write_tone

        d = self.fx.root / "manifest_files"
        if not d.exists():
            d.mkdir()
            write_tone(d / "good.wav", sr=8000, seconds=0.3)
            (d / "lyrics.txt").write_text("a song of the sea\n")
            (d / "bad.wav").write_bytes(b"not audio at all")
            (d / "empty.wav").write_bytes(b"")
            (d / "folder").mkdir()
            os.mkfifo(d / "fifo")
            os.symlink("/dev/zero", d / "zero.txt")
            (d / "tune.mid").write_bytes(self.fx.midi_seeds()["type1.mid"])
        self.dir = d
        from mmengine.runtime import Engine

        self.engine = Engine.load(self.fx.engine(), backend="native")

    def strategy(self, st):
        files = ["good.wav", "lyrics.txt", "bad.wav", "empty.wav", "folder", "fifo", "zero.txt",
                 "tune.mid", "missing.wav", "/dev/zero", "/dev/null", "/proc/self/mem", "",
                 str(self.dir / "good.wav"), "../" * 12 + "etc/passwd", "good.wav\x00x"]
        value = st.one_of(st.sampled_from(files), st.text(max_size=30), st.integers(),
                          st.none(), json_values(st))
        row = st.dictionaries(st.sampled_from(self.COLUMNS), value, max_size=7)
        return st.tuples(st.sampled_from([".jsonl", ".csv"]), st.lists(row, max_size=6),
                         mutation_strategy(st, 256), st.booleans())

    def render(self, case) -> bytes:
        suffix, rows, muts, mutate = case
        if suffix == ".jsonl":
            text = "\n".join(json.dumps(r) for r in rows) + "\n"
        else:
            import csv

            buf = io.StringIO()
            cols = sorted({k for r in rows for k in r}) or ["path"]
            w = csv.DictWriter(buf, fieldnames=cols)
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if v is None else v if isinstance(v, str) else json.dumps(v))
                            for k, v in r.items()})
            text = buf.getvalue()
        data = text.encode("utf-8", "surrogatepass")
        return apply_mutations(data, muts) if mutate else data

    def check(self, case, work):
        from mmengine.data.manifest import load_manifest

        path = self.dir / ("manifest" + case[0])  # relative paths resolve against self.dir
        data = self.render(case)
        path.write_bytes(data)
        (work / path.name).write_bytes(data)
        self.expect(lambda: load_manifest(path))
        results = self.expect(lambda: self.engine.classify(str(path), workers=1))
        if results is not None:
            assert isinstance(results, list), type(results)
            check_entries(results)


class EngineHeaderTarget(Target):
    name = "engine_header"

    def setup(self):
        self.data = self.fx.engine().read_bytes()
        n = struct.unpack("<Q", self.data[12:20])[0]
        self.header_end = 20 + n

    def strategy(self, st):
        return mutation_strategy(st, self.header_end)

    def check(self, case, work):
        from mmengine.runtime import engine_file

        data = apply_mutations(self.data, case)
        path = work / "input.mme"
        path.write_bytes(data)
        self.expect(lambda: engine_file.decode(data, str(path)))
        self.expect(lambda: engine_file.read_header(path))


class EngineTarget(Target):
    name = "engine"

    def setup(self):
        from mmengine.runtime import engine_file

        ef = engine_file.read_engine_file(self.fx.engine())
        self.header, self.payload = ef.header, ef.payload
        self.fixed = {"format", "format_version", "payload_format", "payload_size",
                      "payload_sha256"}
        self.tone = self.fx.tone_wav()

    def strategy(self, st):
        return doc_edit_strategy(st)

    def check(self, case, work):
        from mmengine.runtime import Engine, engine_file

        doc = {k: v for k, v in self.header.items() if k not in self.fixed}
        text = edit_doc(doc, case)
        blob = (json.dumps({k: self.header[k] for k in self.fixed})[:-1] +
                (", " + text[1:] if text.startswith("{") and len(text) > 2 else "}")).encode()
        data = struct.pack("<8sIQ", engine_file.MAGIC, engine_file.FORMAT_VERSION,
                           len(blob)) + blob + self.payload
        path = work / "input.mme"
        path.write_bytes(data)
        eng = self.expect(lambda: Engine.load(path, backend="native"))
        if eng is None:
            return
        out = self.expect(lambda: eng.classify(
            [str(self.tone)], lyrics=["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!" * 4], workers=1))
        if out is None:
            return
        assert isinstance(out, list) and len(out) == 1, out
        check_entries(out)


class CheckpointTarget(Target):
    name = "checkpoint"

    def setup(self):
        src = self.fx.checkpoint()
        self.meta = json.loads((src / "checkpoint.json").read_text())
        self.weights = (src / "checkpoint.safetensors").read_bytes()
        self.outside = None

    def strategy(self, st):
        weights_file = st.sampled_from([None, "../checkpoint.safetensors", "/dev/zero",
                                        "/etc/passwd", "fifo", "sub/../checkpoint.safetensors",
                                        "/proc/self/environ", ""])
        return st.tuples(doc_edit_strategy(st), weights_file, mutation_strategy(st, 512),
                         st.booleans())

    def check(self, case, work):
        from mmengine.checkpoint import load_checkpoint

        edits, weights_file, muts, raw = case
        meta = dict(self.meta)
        if weights_file is not None:
            meta["weights_file"] = weights_file
        text = edit_doc(meta, edits).encode()
        if raw:
            text = apply_mutations(text, muts)
        (work / "checkpoint.json").write_bytes(text)
        (work / "checkpoint.safetensors").write_bytes(self.weights)
        if not (work / "fifo").exists():
            os.mkfifo(work / "fifo")
        outside = work.parent / "checkpoint.safetensors"  # what "../checkpoint.safetensors" names
        if not outside.exists():
            outside.write_bytes(self.weights)
        got = self.expect(lambda: load_checkpoint(work))
        if got is None:
            return
        loaded = got[1]
        used = (work / str(loaded.get("weights_file") or "checkpoint.safetensors")).resolve()
        assert used.parent == work.resolve(), f"weights read from outside the folder: {used}"


class MidiTarget(Target):
    name = "midi"

    def setup(self):
        self.seeds = self.fx.midi_seeds()
        self.names = sorted(self.seeds)

    def strategy(self, st):
        mutated = st.tuples(st.just("seed"), st.sampled_from(self.names), mutation_strategy(st))
        varlen = st.one_of(st.integers(0, 0x7F), st.integers(0, 0x0FFFFFFF))
        event = st.one_of(
            st.tuples(st.just("note"), varlen, st.integers(0, 127), st.integers(0, 127),
                      st.integers(0, 15), varlen),
            st.tuples(st.just("tempo"), varlen, st.sampled_from([0, 1, 2, 500000, 0xFFFFFF])),
            st.tuples(st.just("timesig"), varlen, st.integers(0, 255), st.integers(0, 255)),
            st.tuples(st.just("raw"), varlen, st.binary(max_size=8)))
        generated = st.tuples(st.just("gen"), st.sampled_from([0, 1, 2, 3]),
                              st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0, 1, 0x7FFF,
                                                                                 0x8000, 0xE250])),
                              st.lists(st.lists(event, max_size=12), max_size=3),
                              st.integers(-2, 2))
        return st.one_of(mutated, generated)

    @staticmethod
    def _varlen(v: int) -> bytes:
        out = [v & 0x7F]
        v >>= 7
        while v:
            out.append(0x80 | (v & 0x7F))
            v >>= 7
        return bytes(reversed(out))

    def render(self, case) -> bytes:
        if case[0] == "seed":
            return apply_mutations(self.seeds[case[1]], case[2])
        _, fmt, division, tracks, ntrk_delta = case
        chunks = []
        for events in tracks:
            body = bytearray()
            for ev in events:
                kind, delta = ev[0], ev[1]
                body += self._varlen(delta)
                if kind == "note":
                    _, _, pitch, vel, ch, length = ev
                    body += bytes([0x90 | ch, pitch, vel]) + self._varlen(length) + \
                        bytes([0x80 | ch, pitch, 0])
                elif kind == "tempo":
                    body += b"\xff\x51\x03" + ev[2].to_bytes(3, "big")
                elif kind == "timesig":
                    body += bytes([0xFF, 0x58, 0x04, ev[2], ev[3], 24, 8])
                else:
                    body += ev[2]
            body += b"\x00\xff\x2f\x00"
            chunks.append(b"MTrk" + struct.pack(">I", len(body)) + bytes(body))
        ntrk = max(0, len(chunks) + ntrk_delta)
        return b"MThd" + struct.pack(">IHHH", 6, fmt, ntrk, division) + b"".join(chunks)

    def check(self, case, work):
        from mmengine.features.symbolic import symbolic_features, symbolic_windows

        path = work / "input.mid"
        path.write_bytes(self.render(case))
        f = self.expect(lambda: symbolic_features(path, 64, sr=8000, hop=128))
        if f is None:
            return
        assert f.ndim == 2 and f.shape[1] == 64 and np.isfinite(f).all(), f.shape
        w = self.expect(lambda: symbolic_windows(path, 200, [0, 60, 150], 64, sr=8000, hop=128))
        if w is None:
            return
        assert w.shape[0] == 3 and w.shape[2] == 64 and np.isfinite(w).all(), w.shape


TARGETS = {t.name: t for t in (AudioTarget, ManifestTarget, EngineHeaderTarget, EngineTarget,
                               CheckpointTarget, MidiTarget)}


# ----------------------------------------------------------------------------- driver

def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def run_target(target: Target, seconds: float, seed: int, timeout: float, out: Path,
               work_root: Path) -> dict:
    """Fuzz one target for ``seconds``; returns its figures (and the failure, if any)."""
    from hypothesis import HealthCheck, Phase, given, settings, strategies as st
    from hypothesis import seed as hyp_seed

    stats = {"target": target.name, "examples": 0, "failure": None}
    work = work_root / target.name
    last = {"work": None}

    def one(case):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        last["work"] = work
        stats["examples"] += 1
        with time_limit(timeout):
            target.check(case, work)

    strategy = target.strategy(st)
    t_end = time.monotonic() + seconds
    round_ = 0
    while time.monotonic() < t_end:
        # no shrinking: a hang would be re-run many times; the failing example is the last one
        @settings(max_examples=25, deadline=None, database=None, print_blob=False,
                  suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
                  phases=(Phase.explicit, Phase.generate))
        @given(strategy)
        def prop(case):
            one(case)

        try:
            hyp_seed(seed * 100003 + round_)(prop)()
        except Exception as exc:  # noqa: BLE001 - the finding
            dest = out / target.name
            shutil.rmtree(dest, ignore_errors=True)
            if last["work"] is not None and last["work"].exists():
                shutil.copytree(last["work"], dest, symlinks=True,
                                ignore=lambda d, names: [n for n in names if n == "fifo"])
            dest.mkdir(parents=True, exist_ok=True)
            full = "".join(traceback.format_exception(exc))
            (dest / "traceback.txt").write_text(full)
            notes = getattr(exc, "__notes__", None)
            if notes is not None:
                exc.__notes__ = []  # the drawn case: in traceback.txt, not on the console
            stats["failure"] = {"type": type(exc).__name__, "message": str(exc)[:300],
                                "traceback": "".join(traceback.format_exception(exc)[-12:]),
                                "files": str(dest)}
            break
        round_ += 1
    return stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default=",".join(TARGETS),
                    help=f"comma-separated, of: {', '.join(TARGETS)}")
    ap.add_argument("--seconds", type=float, default=60.0, help="total time budget")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "fuzz-findings")
    ap.add_argument("--headroom-mb", type=int, default=3072,
                    help="address space allowed on top of the size after setup")
    ap.add_argument("--example-timeout", type=float, default=10.0)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        ap.error(f"unknown target(s) {unknown}; known: {list(TARGETS)}")

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    import hypothesis  # noqa: F401 - fail early when missing
    import mmengine.runtime  # noqa: F401
    import torch

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="mmengine-pyfuzz-"))
    try:
        fx = Fixtures(tmp / "fixtures")
        targets = [TARGETS[n](fx) for n in names]
        for t in targets:
            t.setup()
        # warm every lazy import and the native extension before the cap
        if any(t.name in ("manifest", "engine") for t in targets):
            from mmengine.runtime import Engine

            Engine.load(fx.engine(), backend="native").classify([str(fx.tone_wav())],
                                                                 workers=1)
        cap = _vm_bytes() + args.headroom_mb * 2 ** 20
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
        args.out.mkdir(parents=True, exist_ok=True)
        share = args.seconds / len(targets)
        figures = []
        for t in targets:
            t0 = time.monotonic()
            s = run_target(t, share, args.seed, args.example_timeout, args.out, tmp / "work")
            s["seconds"] = round(time.monotonic() - t0, 1)
            s["outcomes"] = dict(sorted(t.outcomes.items(), key=lambda kv: -kv[1]))
            figures.append(s)
            status = "ok" if s["failure"] is None else f"FAILED ({s['failure']['type']})"
            print(f"{t.name:14s} {s['examples']:7d} examples in {s['seconds']:6.1f} s: {status}",
                  flush=True)
            print("               outcomes: " + ", ".join(f"{k} {v}" for k, v in
                                                      s["outcomes"].items()), flush=True)
            if s["failure"]:
                print(s["failure"]["traceback"], file=sys.stderr)
                print(f"  failing example's files: {s['failure']['files']}", file=sys.stderr)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(f"peak RSS {peak} MB (address space capped at {cap / 2 ** 30:.1f} GiB)")
        if args.json:
            args.json.write_text(json.dumps({"targets": figures, "peak_rss_mb": peak,
                                             "seed": args.seed}, indent=1))
        return 1 if any(s["failure"] for s in figures) else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
