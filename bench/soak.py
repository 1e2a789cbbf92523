"""Soak test (issue 15, item 6): classify many items mixing good files and hostile ones, through
``Engine.classify`` and through the CLI, and check that peak RSS stays flat.

    # the full run (minutes): the folk engine, real clips from the data cache, 10,000 items
    mmengine build runs/folk-exp3/fusion/seed0 -o /tmp/soak/folk.mme --backend native
    python bench/soak.py --engine /tmp/soak/folk.mme --data folk --items 10000 \\
        --json bench/results/soak.json

    # the CI version (tests/test_soak.py): a tiny engine built here, generated audio only
    python bench/soak.py --tiny --items 300

Items cycle through the input classes below (a small set of files, paths repeated; ids say
the class) so that every thousand items hold the same mix. Each class has an expected outcome:
``ok`` (a prediction), ``error`` (a per-item error entry, the batch goes on) or ``any``
(good audio with a hostile side input: refusing the item or ignoring the side input are both
correct). Good: real 30 s FLAC clips with their MIDI and title (``--data``), short WAV / Ogg /
MP3, a long FLAC (several windows). Bad: empty, not audio, truncated FLAC, NaN samples, a
missing path, a directory, a FIFO and ``/dev/zero`` as the path, FLAC STREAMINFO with sample
rate 0 or a 36-bit total, a WAV with absurd header fields, the issue's two-hour silent FLAC
whose STREAMINFO total is 0, MP4 bytes. Good audio with a hostile MIDI (huge delta times, one
tick per beat), a non-MIDI ``midi_path``, a FIFO or ``/dev/zero`` as ``lyrics_path`` /
``midi_path``, an 8 MB lyrics file.

Engine pass: one ``Engine`` (``Engine.load``), the items as manifests of ``--chunk`` rows
classified one after the other; a thread samples this process's RSS (/proc/self/status) every
50 ms; the figure per chunk is the peak RSS while it ran. CLI pass: one
``python -m mmengine classify ENGINE MANIFEST --json`` process over all items, its RSS sampled
from /proc/PID/status; its time after start-up (from the moment it holds what a one-item run
peaked at) is split in tenths, the first and last tenth standing for the first and last
thousand items of a 10,000-item run.

Flat: the peak of the last 1,000 items is at most ``--tolerance-mb`` above the peak of the
first 1,000 (the result list itself grows by ~1 KB per item).

Not a timing benchmark, so not the harness (``mmengine.harness``): its measurement is memory
over one long run (RSS sampled by a thread every 50 ms, read per chunk or per tenth of the
run), which repeated interleaved calls of a warm callable would not show; its clock only
places the samples in time and gives the run's items/s as a by-product. Exit status 0 when every pass
is flat, every class got its expected outcome and every item has a result; 1 otherwise.
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- inputs

def _write(path: Path, y: np.ndarray, sr: int, fmt: str, subtype: Optional[str] = None) -> Path:
    import soundfile as sf

    sf.write(str(path), y, sr, format=fmt, subtype=subtype)
    return path


def _tone(seconds: float, sr: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.4 * np.sin(2 * np.pi * freq * t) + 0.05 * np.sin(2 * np.pi * 3 * freq * t))


def _streaminfo_patch(data: bytes, *, rate: Optional[int] = None,
                      total: Optional[int] = None) -> bytes:
    """A FLAC stream with STREAMINFO's sample rate and/or 36-bit total replaced."""
    b = bytearray(data)
    si = 8
    if rate is not None:
        b[si + 10] = (rate >> 12) & 0xFF
        b[si + 11] = (rate >> 4) & 0xFF
        b[si + 12] = (b[si + 12] & 0x0F) | ((rate & 0x0F) << 4)
    if total is not None:
        b[si + 13] = (b[si + 13] & 0xF0) | ((total >> 32) & 0x0F)
        b[si + 14:si + 18] = (total & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(b)


def _silent_flac_unknown_length(path: Path, seconds: float, sr: int) -> Path:
    """The issue's file: int16 silence written by soundfile, then STREAMINFO's total set to 0."""
    import soundfile as sf

    if path.exists():
        return path
    tmp = path.with_suffix(".tmp.flac")
    block = np.zeros(1 << 20, np.int16)
    left = int(seconds * sr)
    with sf.SoundFile(str(tmp), "w", sr, 1, "PCM_16", format="FLAC") as f:
        while left > 0:
            f.write(block[:min(left, len(block))])
            left -= len(block)
    path.write_bytes(_streaminfo_patch(tmp.read_bytes(), total=0))
    tmp.unlink()
    return path


def _hostile_midi() -> bytes:
    """One tick per beat, a tempo of 1 us per beat, notes 0x0FFFFFFF ticks apart."""
    def varlen(v):
        out = [v & 0x7F]
        v >>= 7
        while v:
            out.append(0x80 | (v & 0x7F))
            v >>= 7
        return bytes(reversed(out))

    body = b"\x00\xff\x51\x03\x00\x00\x01"
    for k in range(8):
        body += varlen(0x0FFFFFFF) + bytes([0x90, 60 + k, 100])
        body += varlen(0x0FFFFFFF) + bytes([0x80, 60 + k, 0])
    body += b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 1) + b"MTrk" + struct.pack(">I", len(body)) + body


def _absurd_wav(sr: int) -> bytes:
    """A WAV whose fmt chunk says 65535 channels at 4 GHz and whose data chunk claims 4 GB."""
    fmt = struct.pack("<HHIIHH", 1, 65535, 0xFFFFFFF0, 0xFFFFFFFF, 0xFFFF, 16)
    data = np.zeros(64, np.int16).tobytes()
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + \
        struct.pack("<I", 0xFFFFFFF0) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def make_classes(work: Path, data: Optional[Path], sr: int, *, tiny: bool) -> List[dict]:
    """The input classes: dicts with ``name``, ``expect`` and the manifest ``row``."""
    work.mkdir(parents=True, exist_ok=True)
    f = work / "files"
    f.mkdir(exist_ok=True)
    classes = []

    def add(name, expect, **row):
        classes.append({"name": name, "expect": expect, "row": row})

    # --- good
    if data is not None:
        rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()
                if line.strip()][:3]
        for k, r in enumerate(rows):
            add(f"real_clip_{k}", "ok", path=str(data / r["path"]),
                midi_path=str(data / r["midi_path"]) if r.get("midi_path") else None,
                title=r.get("title"))
        good = str(data / rows[0]["path"])
        import soundfile as sf

        clip, clip_sr = sf.read(good, dtype="float32")
        long_y = np.concatenate([clip] * 3)  # ~90 s: several windows
        _write(f / "long.flac", long_y, clip_sr, "FLAC", "PCM_16")
        _write(f / "truncated_src.flac", clip, clip_sr, "FLAC", "PCM_16")
    else:
        _write(f / "good.flac", _tone(2.0, sr), sr, "FLAC", "PCM_16")
        good = str(f / "good.flac")
        add("good_flac", "ok", path=good, title="a reel for the fiddle")
        _write(f / "long.flac", _tone(10.0 if tiny else 90.0, sr, 330.0), sr, "FLAC", "PCM_16")
        _write(f / "truncated_src.flac", _tone(2.0, sr, 550.0), sr, "FLAC", "PCM_16")
    add("long_flac", "ok", path=str(f / "long.flac"))
    add("short_wav", "ok", path=str(_write(f / "short.wav", _tone(2.0, sr), sr, "WAV", "PCM_16")))
    add("short_ogg", "ok", path=str(_write(f / "short.ogg", _tone(2.0, sr), sr, "OGG", "VORBIS")))
    add("short_mp3", "ok", path=str(_write(f / "short.mp3", _tone(2.0, 16000), 16000, "MP3",
                                           "MPEG_LAYER_III")))

    # --- bad files
    (f / "empty.wav").write_bytes(b"")
    add("empty", "error", path=str(f / "empty.wav"))
    (f / "not_audio.wav").write_text("this is a text file, not audio\n" * 20)
    add("not_audio", "error", path=str(f / "not_audio.wav"))
    src = (f / "truncated_src.flac").read_bytes()
    (f / "truncated.flac").write_bytes(src[:len(src) // 2])
    add("truncated_flac", "error", path=str(f / "truncated.flac"))
    nan = _tone(1.0, sr).astype(np.float32)
    nan[sr // 3] = np.nan
    add("nan_samples", "error", path=str(_write(f / "nan.wav", nan, sr, "WAV", "FLOAT")))
    add("missing", "error", path=str(f / "does_not_exist.wav"))
    (f / "a_directory.wav").mkdir(exist_ok=True)
    add("directory", "error", path=str(f / "a_directory.wav"))
    fifo = f / "fifo.wav"
    if not fifo.exists():
        os.mkfifo(fifo)
    add("fifo_path", "error", path=str(fifo))
    add("dev_zero_path", "error", path="/dev/zero")
    small = (f / "truncated_src.flac").read_bytes()
    (f / "rate0.flac").write_bytes(_streaminfo_patch(small, rate=0))
    add("flac_rate_0", "error", path=str(f / "rate0.flac"))
    (f / "total_huge.flac").write_bytes(_streaminfo_patch(small, total=(1 << 36) - 1))
    add("flac_total_36bit", "error", path=str(f / "total_huge.flac"))
    (f / "absurd.wav").write_bytes(_absurd_wav(sr))
    add("wav_absurd_header", "error", path=str(f / "absurd.wav"))
    silent = _silent_flac_unknown_length(f / "two_hours_total0.flac",
                                         960.0 if tiny else 7200.0, 8000 if tiny else 48000)
    add("flac_long_total_0", "error", path=str(silent))
    (f / "movie.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A \x00\x00\x00\x00" + b"\0" * 256)
    add("mp4_bytes", "error", path=str(f / "movie.m4a"))

    # --- good audio, hostile side inputs
    (f / "hostile.mid").write_bytes(_hostile_midi())
    add("hostile_midi", "any", path=good, midi_path=str(f / "hostile.mid"))
    (f / "garbage.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\xff\xff\x01\xe0" + b"\xff" * 64)
    add("garbage_midi", "any", path=good, midi_path=str(f / "garbage.mid"))
    add("fifo_midi", "any", path=good, midi_path=str(fifo))
    add("dev_zero_midi", "any", path=good, midi_path="/dev/zero")
    add("fifo_lyrics", "any", path=good, lyrics_path=str(fifo))
    add("dev_zero_lyrics", "any", path=good, lyrics_path="/dev/zero")
    big = f / "big_lyrics.txt"
    if not big.exists():
        big.write_text("la " * ((8 << 20) // 3))
    add("huge_lyrics", "any", path=good, lyrics_path=str(big))
    return classes


def manifest_rows(classes: List[dict], n: int, start: int = 0) -> List[dict]:
    out = []
    for i in range(start, start + n):
        c = classes[i % len(classes)]
        row = {k: v for k, v in c["row"].items() if v is not None}
        row["id"] = f"{i}:{c['name']}"
        out.append(row)
    return out


def write_manifest(path: Path, rows: List[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ----------------------------------------------------------------------------- RSS sampling

def _rss_mb(pid="self") -> Optional[float]:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    """RSS of ``pid`` every ``period`` s: ``samples`` = [(t, MB)]."""

    def __init__(self, pid="self", period: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples = []
        self.stop = threading.Event()

    def run(self):
        t0 = time.monotonic()
        while not self.stop.is_set():
            v = _rss_mb(self.pid)
            if v is not None:
                self.samples.append((time.monotonic() - t0, v))
            self.stop.wait(self.period)

    def peak(self, t_from: float = 0.0, t_to: float = float("inf")) -> float:
        vals = [v for t, v in self.samples if t_from <= t <= t_to]
        return max(vals) if vals else float("nan")


# ----------------------------------------------------------------------------- outcomes

class Tally:
    def __init__(self, classes: List[dict]):
        self.expect = {c["name"]: c["expect"] for c in classes}
        self.counts: Dict[str, Dict[str, int]] = {c["name"]: {} for c in classes}
        self.items = 0

    def add(self, ident: Optional[str], outcome: str) -> None:
        name = (ident or "?:?").split(":", 1)[1]
        d = self.counts.setdefault(name, {})
        d[outcome] = d.get(outcome, 0) + 1
        self.items += 1

    def add_results(self, results) -> None:
        for r in results:
            if isinstance(r, dict):
                ok = r.get("error") is None
                self.add(r.get("id"), "ok" if ok else r.get("error_type", "error"))
            else:
                self.add(r.id, "ok" if r.ok else r.error_type)

    def mismatches(self) -> List[str]:
        out = []
        for name, d in self.counts.items():
            want = self.expect.get(name, "?")
            got_ok = d.get("ok", 0)
            got_err = sum(v for k, v in d.items() if k != "ok")
            if want == "ok" and got_err:
                out.append(f"{name}: expected predictions, got {d}")
            elif want == "error" and got_ok:
                out.append(f"{name}: expected errors, got {d}")
        return out


# ----------------------------------------------------------------------------- passes

def engine_pass(engine: Path, classes: List[dict], items: int, chunk: int, work: Path,
                workers: int, chunk_timeout: float) -> dict:
    from tqdm import tqdm

    from mmengine.runtime import Engine

    sampler = Sampler()
    sampler.start()
    t_load = time.monotonic()
    eng = Engine.load(engine)
    load_s = time.monotonic() - t_load
    tally = Tally(classes)
    per_chunk = []
    t0 = time.monotonic()
    with tqdm(total=items, unit="item", desc="Engine.classify") as bar:
        for start in range(0, items, chunk):
            n = min(chunk, items - start)
            m = write_manifest(work / "chunk.jsonl", manifest_rows(classes, n, start))
            c0 = sampler.samples[-1][0] if sampler.samples else 0.0
            faulthandler.dump_traceback_later(chunk_timeout, exit=True)
            results = eng.classify(str(m), workers=workers)
            faulthandler.cancel_dump_traceback_later()
            c1 = sampler.samples[-1][0] if sampler.samples else 0.0
            if len(results) != n:
                raise RuntimeError(f"{len(results)} results for {n} items")
            tally.add_results(results)
            per_chunk.append({"items_done": start + n, "peak_rss_mb": round(sampler.peak(c0, c1), 1)})
            bar.update(n)
    seconds = time.monotonic() - t0
    sampler.stop.set()
    sampler.join()
    k = max(1, min(1000, items // 10) // chunk)  # chunks in the first/last thousand
    first = max(c["peak_rss_mb"] for c in per_chunk[:k])
    last = max(c["peak_rss_mb"] for c in per_chunk[-k:])
    return {"pass": "engine", "items": tally.items, "seconds": round(seconds, 1),
            "items_per_s": round(tally.items / seconds, 1), "load_s": round(load_s, 2),
            "window_items": k * chunk, "first_peak_mb": first, "last_peak_mb": last,
            "peak_rss_mb": round(max(v for _, v in sampler.samples), 1),
            "per_chunk": per_chunk, "outcomes": tally.counts, "mismatches": tally.mismatches()}


def cli_pass(engine: Path, classes: List[dict], items: int, work: Path, workers: int,
             timeout: float) -> dict:
    cmd = [sys.executable, "-m", "mmengine", "classify", str(engine), "--json",
           "--workers", str(workers)]
    # start-up (imports, engine load): a one-item run's time and peak RSS
    one = write_manifest(work / "cli_one.jsonl", manifest_rows(classes, 1))
    t = time.monotonic()
    p1 = subprocess.Popen(cmd + [str(one)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    s1 = Sampler(p1.pid)
    s1.start()
    p1.wait(timeout=timeout)
    startup_s = time.monotonic() - t
    s1.stop.set()
    s1.join()
    ready_mb = s1.peak()
    m = write_manifest(work / "cli_all.jsonl", manifest_rows(classes, items))
    out_path = work / "cli_out.json"
    err_path = work / "cli_err.txt"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd + [str(m)], stdout=out, stderr=err)
        sampler = Sampler(proc.pid)
        sampler.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
            rc = f"killed after {timeout:g} s"
        seconds = time.monotonic() - t0
        sampler.stop.set()
        sampler.join()
    tally = Tally(classes)
    try:
        doc = json.loads(out_path.read_text())
        tally.add_results(doc if isinstance(doc, list) else doc.get("results", [doc]))
    except (json.JSONDecodeError, OSError) as exc:
        print(f"CLI output unreadable: {exc}; stderr: {err_path.read_text()[-2000:]}",
              file=sys.stderr)
    # the classify phase starts once the process holds what a one-item run peaked at
    ready = [t for t, v in sampler.samples if v >= 0.98 * ready_mb]
    if ready:
        startup_s = min(ready[0], startup_s)
    work_s = seconds - startup_s
    if work_s < 1.0:  # a short run is mostly start-up: compare the whole run with itself
        startup_s, work_s = 0.0, seconds
    frac = min(1000, items // 10) / items
    span = max(frac * work_s, 0.5)  # at least 10 samples
    first = sampler.peak(startup_s, startup_s + span)
    last = sampler.peak(seconds - span, seconds)
    # RSS over time in tenths of the classify phase, for the record
    tenths = [round(sampler.peak(startup_s + k * work_s / 10, startup_s + (k + 1) * work_s / 10), 1)
              for k in range(10)]
    return {"pass": "cli", "command": " ".join(cmd[1:] + ["MANIFEST"]), "exit_code": rc,
            "items": tally.items, "seconds": round(seconds, 1),
            "items_per_s": round(tally.items / seconds, 1), "startup_s": round(startup_s, 2),
            "window_items": int(frac * items), "first_peak_mb": first, "last_peak_mb": last,
            "peak_rss_mb": round(sampler.peak(), 1), "rss_by_tenth_mb": tenths,
            "outcomes": tally.counts, "mismatches": tally.mismatches()}


def tiny_engine(path: Path) -> Path:
    """A tiny untrained engine (audio, text, MIDI notes), like the tests' own; CI has no
    trained run."""
    import torch

    from mmengine.config import AudioConfig, FrontendConfig, TextConfig, first_design, to_dict
    from mmengine.export import build_engine_from_model
    from mmengine.features.symbolic import symbolic_dim
    from mmengine.features.text import FORMAT, TOKEN_PATTERN
    from mmengine.models import build_model

    if path.exists():
        return path
    torch.manual_seed(0)
    cfg = first_design(hidden_size=8, num_layers=1, stem_stages=1, mfcc_channels=4,
                       mel_channels=4, text_dim=3, pooling="mean",
                       symbolic_channels=4, modalities=("mfcc", "mel", "text", "symbolic"))
    model = build_model(cfg, dict(n_mfcc=5, n_mels=8, text_dim=4, symbolic_dim=symbolic_dim(),
                                  n_classes=3, multilabel=False)).eval()
    text = {"format": FORMAT, "config": to_dict(TextConfig()), "token_pattern": TOKEN_PATTERN,
            "vocabulary": ["jig", "reel", "sea", "song"], "idf": [1.0, 1.5, 2.0, 2.5]}
    return build_engine_from_model(
        model, path, backend="native", labels=["a", "b", "c"],
        audio_cfg=AudioConfig(sample_rate=8000, clip_seconds=1.0),
        frontend_cfg=FrontendConfig(sample_rate=8000, n_fft=256, hop_length=128, n_mels=8,
                                    n_mfcc=5),
        text=text, text_field="lyrics", symbolic={"dim": symbolic_dim()})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", type=Path, help="engine file (.mme)")
    ap.add_argument("--tiny", action="store_true",
                    help="build a tiny engine and use generated audio only (CI)")
    ap.add_argument("--data", help="built-in data set whose first clips are the good items "
                                   "(e.g. folk; needs 'mmengine data build')")
    ap.add_argument("--items", type=int, default=10000)
    ap.add_argument("--chunk", type=int, default=250, help="items per classify call (engine pass)")
    ap.add_argument("--workers", type=int, default=2, help="decoding threads")
    ap.add_argument("--passes", default="engine,cli", help="engine, cli or both")
    ap.add_argument("--tolerance-mb", type=float, default=25.0,
                    help="allowed growth of peak RSS from the first to the last 1,000 items")
    ap.add_argument("--no-rss-check", dest="rss_check", action="store_false",
                    help="record RSS but do not judge it (runs of a few hundred items last a "
                         "few seconds, mostly warm-up: too short to tell growth from start-up)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmengine-soak"),
                    help="folder for the inputs (kept: the two-hour FLAC takes a while)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="limit per pass, seconds")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    if not args.engine and not args.tiny:
        ap.error("give --engine or --tiny")

    args.work.mkdir(parents=True, exist_ok=True)
    engine = args.engine or tiny_engine(args.work / "tiny.mme")
    data = None
    if args.data:
        from mmengine.data.corpus import default_dir

        data = Path(default_dir(args.data))
    from mmengine.runtime import engine_file

    sr = int(engine_file.read_header(engine)["audio"]["sample_rate"])
    classes = make_classes(args.work, data, sr, tiny=args.tiny)
    print(f"{len(classes)} input classes, {args.items} items, engine {engine}")
    report = {"engine": str(engine), "items": args.items, "classes": [
        {"name": c["name"], "expect": c["expect"]} for c in classes], "passes": []}
    ok = True
    for name in [p.strip() for p in args.passes.split(",") if p.strip()]:
        if name == "engine":
            r = engine_pass(engine, classes, args.items, args.chunk, args.work, args.workers,
                            args.timeout)
        elif name == "cli":
            r = cli_pass(engine, classes, args.items, args.work, args.workers, args.timeout)
        else:
            ap.error(f"unknown pass {name!r}")
        growth = r["last_peak_mb"] - r["first_peak_mb"]
        r["flat"] = bool(growth <= args.tolerance_mb)
        report["passes"].append(r)
        problems = list(r["mismatches"])
        if r["items"] != args.items:
            problems.append(f"{r['items']} results for {args.items} items")
        if args.rss_check and not r["flat"]:
            problems.append(f"peak RSS grew {growth:.1f} MB (> {args.tolerance_mb:g})")
        ok &= not problems
        print(f"{name}: {r['items']} items in {r['seconds']} s ({r['items_per_s']} items/s); "
              f"peak RSS first {r['window_items']} items {r['first_peak_mb']:.1f} MB, last "
              f"{r['window_items']} {r['last_peak_mb']:.1f} MB (growth {growth:+.1f} MB), "
              f"overall {r['peak_rss_mb']:.1f} MB" +
              (f"; exit code {r['exit_code']}" if name == "cli" else ""))
        for c, d in r["outcomes"].items():
            print(f"    {c:20s} {d}")
        for p in problems:
            print(f"  PROBLEM: {p}")
    report["ok"] = bool(ok)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
