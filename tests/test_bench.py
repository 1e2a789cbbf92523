"""``mmengine bench`` on a tiny engine (1 round, batch 1): each backend in its own harness
process, the table and the JSON, GFLOP/s from the one formula, a backend that cannot run named
with its reason (exit 1), and the run without torch (the native backend alone, in processes
where ``import torch`` fails)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from mmengine import flops
from mmengine.bench import benchmark_engine, format_table
from mmengine.cli import main
from mmengine.config import AudioConfig, FrontendConfig, ModelConfig
from mmengine.export import build_engine_from_model
from mmengine.models import build_model
from mmengine.runtime import registry
from mmengine.runtime.engine_file import read_header

SR = 8000

#: run the CLI; torch (and every torch.* module) must have stayed out of this process
CHECKED_CLI = """
import sys
from mmengine.cli import main
code = main(sys.argv[1:])
assert all(sys.modules[m] is None for m in sys.modules
           if m == "torch" or m.startswith("torch.")), "torch imported"
sys.exit(code)
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    if "native" not in registry.available_backends():
        pytest.skip("native backend not built here")
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=16, mfcc_channels=8, mel_channels=16, dilations=(1, 2),
                      flux_bands=4, modalities=("mfcc", "mel"))
    m = build_model(cfg, dict(n_mfcc=8, n_mels=16, text_dim=0, symbolic_dim=0, n_classes=3,
                              multilabel=False)).eval()
    return build_engine_from_model(
        m, tmp_path_factory.mktemp("bench") / "tiny.mme", backend="native",
        labels=["a", "b", "c"], audio_cfg=AudioConfig(sample_rate=SR, clip_seconds=0.5),
        frontend_cfg=FrontendConfig(sample_rate=SR, n_fft=256, hop_length=64, n_mels=16,
                                    n_mfcc=8))


def test_bench_table_and_json(engine, tmp_path):
    out = tmp_path / "bench.json"
    res = benchmark_engine(engine, batches=[1], rounds=1, backends=["native", "torch", "nosuch"],
                           out_json=out)
    rows = {r["backend"]: r for r in res["rows"]}
    assert set(rows) == {"native", "torch"} and res["frames"] == 63  # 1 + 4000 // 64
    assert "unknown backend 'nosuch'" in res["failed"]["nosuch"]
    spec = read_header(engine)["model"]
    per_seq = flops.model_recurrent_flops(spec, 63)
    assert res["flops"]["recurrence_per_sequence"] == per_seq
    assert res["flops"]["model_per_sequence"] == flops.model_flops(spec, 63)["total"]
    nat, tor = rows["native"], rows["torch"]
    assert nat["lstm_gflops"] == pytest.approx(per_seq / (nat["median_ms"] / 1e3) / 1e9)
    assert nat["seq_per_s"] == pytest.approx(1e3 / nat["median_ms"])
    assert nat["vs_torch"] == pytest.approx(tor["median_ms"] / nat["median_ms"])
    assert tor["vs_torch"] is None
    # one process per backend: each its own peak RSS (torch's holds torch)
    assert 0 < nat["peak_rss_mb"] < tor["peak_rss_mb"]
    assert nat["calls"] >= 1 and nat["p50_ms"] > 0 and nat["p99_ms"] >= nat["p50_ms"] * 0.999
    saved = json.loads(out.read_text())
    assert saved["rows"] == json.loads(json.dumps(res["rows"]))
    assert saved["failed"] == res["failed"]
    table = format_table(res)
    assert "| native | 1 | 63 |" in table and "| torch | 1 | 63 |" in table
    assert "peak RSS MiB" in table and "- nosuch: not timed: UnknownBackendError" in table


def test_bench_cli_exit_status(engine, capsys):
    assert main(["bench", str(engine), "--rounds", "1", "--batches", "1",
                 "--backends", "native,nosuch"]) == 1
    out = capsys.readouterr().out
    assert "| native | 1 |" in out and "nosuch: not timed" in out


def test_bench_without_torch(engine, tmp_path):
    """``import torch`` fails in the CLI process and in every harness worker it spawns (a
    ``sitecustomize`` on PYTHONPATH, which spawned processes inherit): the native backend is
    timed, the torch backend is not offered."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text('import sys\nsys.modules["torch"] = None\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(block)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-c", CHECKED_CLI, "bench", str(engine), "--rounds",
                           "1", "--batches", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "| native | 1 | 63 |" in proc.stdout and "| torch |" not in proc.stdout
    res = json.loads(out.read_text())
    assert [r["backend"] for r in res["rows"]] == ["native"] and not res["failed"]
    assert res["rows"][0]["lstm_gflops"] > 0 and res["rows"][0]["model_gflops"] > 0
