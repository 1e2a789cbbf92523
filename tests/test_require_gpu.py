"""MMENGINE_REQUIRE_GPU=1 (tests/conftest.py) turns every skip for a missing GPU, CUDA, Triton or
``mmengine._C`` into a failure, module-level ones included; DALI, TensorRT, skips of tests for
machines without a GPU and unrelated optional skips stay skips. Without the variable, all skip."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CASES = '''
import pytest

def test_gpu_missing(): pytest.skip("needs a CUDA GPU")
def test_triton_missing(): pytest.skip("triton is not installed")
def test_ext_missing(): pytest.skip("mmengine._C built without the native front end")
def test_dali(): pytest.skip("could not import 'nvidia.dali': No module named 'nvidia'")
def test_tensorrt(): pytest.skip("TensorRT is usable here")
def test_for_cpu_machines(): pytest.skip("a GPU is visible")
def test_optional(): pytest.skip("no flac CLI")
def test_runs(): pass
'''


def _run(tmp_path: Path, require: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MMENGINE_REQUIRE_GPU"}
    if require:
        env["MMENGINE_REQUIRE_GPU"] = "1"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                           "--continue-on-collection-errors",
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    return proc.stdout + proc.stderr


def test_require_gpu_turns_gpu_and_extension_skips_into_failures(tmp_path):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_cases.py").write_text(CASES)
    (tmp_path / "test_module_importorskip.py").write_text(
        "import pytest\npytest.importorskip('mmengine.no_such_extension')\ndef test_x(): pass\n")
    (tmp_path / "test_module_skipif.py").write_text(
        "import pytest\npytestmark = pytest.mark.skipif(True, reason='mmengine._C not built')\n"
        "def test_y(): pass\n")
    out = _run(tmp_path, require=True)
    for name in ("test_gpu_missing", "test_triton_missing", "test_ext_missing"):
        assert f"FAILED test_cases.py::{name}" in out, out
    assert "ERROR test_module_skipif.py::test_y" in out, out  # the mark is evaluated at setup
    assert "ERROR test_module_importorskip.py" in out, out  # a collection error
    for name in ("test_dali", "test_tensorrt", "test_for_cpu_machines", "test_optional"):
        assert f"FAILED test_cases.py::{name}" not in out, out
    assert "4 skipped" in out and "3 failed" in out and "1 passed" in out, out

    out = _run(tmp_path, require=False)
    assert "1 passed, 9 skipped" in out, out
