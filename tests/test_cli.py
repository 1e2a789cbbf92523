"""The ``mmengine`` command: help texts, version, and the whole chain on a tiny real build."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmengine import PROJECT, __version__
from mmengine.cli import build_parser, main

SUBCOMMANDS = [["data"], ["data", "build"], ["data", "list"], ["data", "path"], ["features"],
               ["train"], ["evaluate"], ["experiment"], ["build"], ["classify"], ["bench"]]


@pytest.mark.parametrize("cmd", SUBCOMMANDS, ids=lambda c: " ".join(c))
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(cmd + ["--help"])
    assert e.value.code == 0
    assert "usage: mmengine" in capsys.readouterr().out


def test_version_names_the_project():
    out = subprocess.run([sys.executable, "-m", "mmengine", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"{PROJECT} {__version__}"


def test_unknown_data_is_a_clear_error(capsys, tmp_path):
    assert main(["features", str(tmp_path / "nope.csv")]) == 1
    assert "neither an existing manifest" in capsys.readouterr().err


def test_whole_chain_on_a_tiny_build(tmp_path, monkeypatch, capsys):
    pytest.importorskip("music21")
    monkeypatch.setenv("MMENGINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    assert main(["data", "build", "folk", "--limit", "16", "--workers", "2", "-q"]) == 0
    assert main(["features", "folk", "-q"]) == 0
    assert "16 clips, 1292 frames each" in capsys.readouterr().out
    assert main(["train", "--data", "folk", "--out", "run", "--max-epochs", "2", "-q"]) == 0
    assert main(["evaluate", "run", "-q"]) == 0
    assert (tmp_path / "run" / "report.md").exists()
    assert (tmp_path / "run" / "confusion.png").stat().st_size > 1000
    assert main(["build", "run", "-o", "run/folk.mme", "--backend", "native"]) == 0
    capsys.readouterr()
    clip = next((tmp_path / "data" / "folk" / "audio").glob("*.flac"))
    assert main(["classify", "run/folk.mme", str(clip), str(tmp_path / "missing.wav"),
                 "--json"]) == 1  # one bad input: exit 1, but a result for the good one
    res = json.loads(capsys.readouterr().out)
    assert res[0]["label"] in {"hornpipe", "jig", "reel", "slip jig"} and "error" in res[1]
    assert main(["bench", "run/folk.mme", "--rounds", "1", "--batches", "1"]) == 0
    assert "| native | 1 |" in capsys.readouterr().out


def test_api_names_survive_submodule_imports():
    """``mmengine.train`` / ``mmengine.evaluate`` stay the API functions after the modules
    that implement them are imported (they are named ``training`` / ``evaluation``)."""
    import importlib

    import mmengine

    importlib.import_module("mmengine.training")
    importlib.import_module("mmengine.evaluation")
    for name in ("train", "evaluate", "experiment", "build_engine", "classify", "benchmark"):
        assert getattr(mmengine, name).__module__ == "mmengine.api", name
