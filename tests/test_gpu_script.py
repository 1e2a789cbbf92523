"""The GPU run's script and helpers (``bench/gpu/``), on the CPU.

``bash bench/gpu/run.sh --dry-run`` passes and writes its summary (wheels: the listing alone,
as in CI where prepare.sh has not run; the build reused; the gpu tests collected; the
benchmarks imported and smoke-tested); the wheel listing closes over wheel requirements and
checks tags, versions and size (fake wheels, no network); the test verdict accepts only the
skips of what cannot exist on the GPU machine (a real pytest run's JUnit XML); the summary of a
GPU run reads the benchmarks' JSON; imports the machine lacks are found.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.gpu import report, wheels  # noqa: E402


def test_dry_run_passes_and_writes_its_summary(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable,
           "MMENGINE_GPU_WHEELS": str(tmp_path / "no-wheels"), "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu" / "run.sh"), "--dry-run"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "dry-run" and summary["ok"], summary.get("problems")
    assert [s["name"] for s in summary["steps"]] == ["env", "wheels", "build", "tests",
                                                     "bench-check"]
    assert all(s["status"] == "ok" for s in summary["steps"]), summary["steps"]
    assert summary["seconds"] < 180, summary["steps"]
    assert "soundfile" in " ".join(summary["wheels"]["needed"])
    assert summary["collect"]["tests"] > 0 and not summary["collect"]["foreign_imports"]
    assert "tests/test_triton_lstm.py" in summary["collect"]["per_file"]
    assert summary["files"] == ["run.log", "summary.json"]
    assert "summary (dry-run): ok" in (out / "run.log").read_text()
    assert not list(tmp_path.glob("mmengine-gpu-state.*")), "state folder left behind"


# ---------------------------------------------------------------------- wheels
def fake_wheel(folder: Path, filename: str, requires=()) -> Path:
    """A wheel file holding only its METADATA (name and version from ``filename``)."""
    name, version = filename.split("-")[:2]
    meta = "Metadata-Version: 2.1\nName: {}\nVersion: {}\n".format(name, version)
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    path = folder / filename
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}-{version}.dist-info/METADATA", meta)
    return path


def test_needed_is_what_the_machine_lacks():
    names = {r.name for r in wheels.needed()}
    assert {"soundfile", "soxr", "mido", "pretty_midi"} <= names
    assert not names & {"torch", "numpy", "scipy", "triton", "onnxruntime", "safetensors"}
    assert not {n.lower().replace("_", "-") for n in names} & wheels.machine_packages()
    report_ = wheels.plan()
    assert report_["ok"] and "torch" in report_["on_machine"]


def test_missing_closes_over_wheel_requirements_and_check_reports(tmp_path, monkeypatch):
    fake_wheel(tmp_path, "soundfile-0.14.0-py2.py3-none-manylinux_2_28_x86_64.whl",
               ["cffi >=1.0", "numpy", "typing-extensions"])
    fake_wheel(tmp_path, "soxr-1.1.0-cp312-abi3-manylinux_2_17_x86_64.whl",
               ["numpy", 'sphinx; extra == "docs"'])
    fake_wheel(tmp_path, "mido-1.3.3-py3-none-any.whl",
               ["packaging", 'importlib-metadata; python_version < "3.8"'])
    fake_wheel(tmp_path, "pretty_midi-0.2.11-py3-none-any.whl",
               ["numpy>=1.7.0", "mido>=1.1.16", "six", "importlib_resources",
                'pyfluidsynth>=1.3.1; extra == "fluidsynth"'])
    assert sorted(r.name for r in wheels.missing(tmp_path)) == ["cffi", "importlib_resources"]
    fake_wheel(tmp_path, "cffi-2.1.1-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
               ['pycparser; implementation_name != "PyPy"'])
    fake_wheel(tmp_path, "importlib_resources-7.1.0-py3-none-any.whl")
    assert [r.name for r in wheels.missing(tmp_path)] == ["pycparser"]
    assert not wheels.check(tmp_path)["ok"]
    fake_wheel(tmp_path, "pycparser-3.12-py3-none-any.whl")
    result = wheels.check(tmp_path)
    assert result["ok"], result["problems"]
    assert len(result["wheels"]) == 7 and result["total_bytes"] < 10_000

    monkeypatch.setattr(wheels, "LIMIT_BYTES", 100)
    assert any("64 MiB" in p for p in wheels.check(tmp_path)["problems"])
    monkeypatch.undo()
    fake_wheel(tmp_path, "regex-2024.1.1-cp311-cp311-manylinux_2_17_x86_64.whl")
    assert any("regex-2024.1.1-cp311" in p and "no tag installable" in p
               for p in wheels.check(tmp_path)["problems"])
    fake_wheel(tmp_path, "soxr-1.0.0-cp312-abi3-manylinux_2_17_x86_64.whl")
    assert "two wheels of soxr" in wheels.check(tmp_path)["problems"][0]


# ---------------------------------------------------------------------- report
TESTS = '''
import pytest

def test_pass():
    pass

def test_skip_dali():
    pytest.skip("could not import 'nvidia.dali': No module named 'nvidia.dali'")

def test_skip_tensorrt():
    pytest.skip("could not import 'tensorrt': No module named 'tensorrt'")
'''


def run_pytest(folder: Path, body: str) -> Path:
    (folder / "test_fake.py").write_text(body)
    junit = folder / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--junitxml={junit}", "test_fake.py"], cwd=folder, capture_output=True,
                   timeout=120)
    return junit


def test_verdict_accepts_only_the_skips_of_what_cannot_exist(tmp_path):
    good = report.tests_verdict(run_pytest(tmp_path, TESTS))
    assert good["ok"] and (good["passed"], good["skipped"]) == (1, 2), good
    assert {v["allowed_as"].split()[0] for v in good["skip_reasons"].values()} == {"DALI",
                                                                                   "TensorRT"}
    bad = report.tests_verdict(run_pytest(tmp_path, TESTS + '''
def test_skip_other():
    pytest.skip("needs a CUDA GPU")

def test_fail():
    assert 1 == 2, "wrong"
'''))
    assert not bad["ok"] and (bad["passed"], bad["failed"], bad["skipped"]) == (1, 1, 3)
    assert bad["unexpected_skips"] == ["test_fake::test_skip_other: needs a CUDA GPU"]
    assert "test_fail" in bad["failures"][0]


def test_summary_of_a_gpu_run_reads_results(tmp_path):
    state, out = tmp_path / "state", tmp_path / "out"
    state.mkdir(), out.mkdir()
    names = ["env", "wheels", "build", "tests", "bench-lstm-standard", "bench-lstm-model",
             "bench-engine"]
    (state / "steps.jsonl").write_text("".join(json.dumps(
        {"name": n, "status": "ok", "rc": 0, "seconds": 3, "limit_s": 60}) + "\n" for n in names))
    run_pytest(tmp_path, TESTS).rename(out / "pytest-gpu.xml")
    row = {"dtype": "fp32", "T": 646, "batch": 1, "median_ms": 1.0, "vs_cudnn": 2.5}
    for shape in ("standard", "model"):
        (out / f"bench-lstm-{shape}.json").write_text(json.dumps({
            "meta": {"device": "NVIDIA H100", "workload": {"shape": shape}, "absent": {}},
            "results": [{**row, "contender": "cudnn", "vs_cudnn": 1.0},
                        {**row, "contender": "cuda"}]}))
    result = report.summary("gpu", state, out)
    assert not result["ok"] and result["problems"] == ["bench engine: no results"]
    assert result["bench"]["lstm-model"]["vs_cudnn"] == {"fp32 T=646 B=1 cuda": 2.5}
    assert result["tests"]["ok"] and result["tests"]["passed"] == 1
    (out / "bench-engine.json").write_text(json.dumps({"suites": [{"suite": "engine", "results": [
        {"batch": 8, "contender": "engine-cuda", "items_per_s": 40.0,
         "ratios": {"engine-torch": 1.5}},
        {"batch": 8, "contender": "engine-triton", "skipped": "no triton"}]}]}))
    result = report.summary("gpu", state, out)
    assert result["ok"], result["problems"]
    assert result["bench"]["engine"]["engine B=8 engine-cuda"]["clips_per_s"] == 40.0


def test_gpu_files_and_foreign_imports():
    files = report.gpu_files()
    assert {"tests/test_triton_lstm.py", "tests/test_backend_verified.py"} <= set(files)
    assert "tests/test_metrics.py" not in files
    assert report.foreign_imports(["json", "numpy", "torch.nn", "mmengine.runtime",
                                   "soundfile"]) == {}
    pytest.importorskip("librosa")
    assert report.foreign_imports(["librosa.feature"]) == {"librosa": ["librosa"]}
