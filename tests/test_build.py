"""The C++ extension mmengine._C: it imports, sees the CPU as /proc/cpuinfo does, picks the best
kernel variant, and lets tests force each variant."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmengine._ext import native_extension

_C = native_extension()
pytestmark = pytest.mark.skipif(_C is None, reason="mmengine._C not built (pip install -e .)")

ORDER = ["scalar", "avx2", "avx512", "avx512bf16"]
# our feature name -> the flag Linux prints in /proc/cpuinfo
CPUINFO_NAME = {
    "sse2": "sse2",
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512vl": "avx512vl",
    "avx512dq": "avx512dq",
    "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16",
}


def _cpuinfo_flags() -> set:
    path = Path("/proc/cpuinfo")
    if not path.exists():
        pytest.skip("no /proc/cpuinfo on this system")
    for line in path.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    pytest.skip("/proc/cpuinfo has no flags line")


def _runnable(features: dict) -> list:
    """Variants this CPU can run, by the features the extension reports."""
    ok = ["scalar"]
    if features.get("avx2") and features.get("fma"):
        ok.append("avx2")
    if all(features.get(f) for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq")):
        ok.append("avx512")
        if features.get("avx512bf16"):
            ok.append("avx512bf16")
    return ok


@pytest.fixture
def auto_isa():
    yield
    _C.set_isa("auto")


def test_imports_from_any_directory(tmp_path):
    code = "import mmengine._C as C; print(C.selected_isa())"
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(os.environ))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() in ORDER


def test_module_lives_in_the_package():
    import mmengine

    assert Path(_C.__file__).parent == Path(mmengine.__file__).parent


def test_features_match_cpuinfo():
    flags = _cpuinfo_flags()
    feats = _C.cpu_features()
    if not feats:
        pytest.skip("feature detection is x86-only")
    assert set(CPUINFO_NAME) <= set(feats)
    mismatch = {ours: (feats[ours], linux in flags) for ours, linux in CPUINFO_NAME.items()
                if feats[ours] != (linux in flags)}
    assert not mismatch, f"extension vs /proc/cpuinfo: {mismatch}"


def test_build_info():
    info = _C.build_info()
    assert info["isas"][0] == "scalar" and set(info["isas"]) <= set(ORDER)
    assert isinstance(info["openmp"], bool) and info["cuda"] == _C.has_cuda()
    if _C.has_openmp():
        assert _C.max_threads() >= 1


def test_selected_isa_is_the_best_available(auto_isa):
    _C.set_isa("auto")
    compiled = _C.build_info()["isas"]
    expected = [isa for isa in _runnable(_C.cpu_features()) if isa in compiled][-1]
    assert _C.best_isa() == expected
    assert _C.selected_isa() == expected


def test_force_every_runnable_isa(auto_isa):
    compiled = _C.build_info()["isas"]
    runnable = [isa for isa in _runnable(_C.cpu_features()) if isa in compiled]
    for isa in runnable:
        _C.set_isa(isa)
        assert _C.selected_isa() == isa
    for isa in ORDER:
        if isa not in runnable:
            with pytest.raises(ValueError, match="not supported"):
                _C.set_isa(isa)
    _C.set_isa("auto")
    assert _C.selected_isa() == _C.best_isa()


def test_unknown_isa_is_refused(auto_isa):
    before = _C.selected_isa()
    with pytest.raises(ValueError, match="unknown ISA"):
        _C.set_isa("sse9")
    assert _C.selected_isa() == before
