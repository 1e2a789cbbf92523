"""Reading and summing up a GPU run of ``bench/gpu/run.sh`` (also its ``--dry-run``).

Commands (``python bench/gpu/report.py CMD``):

    gpu-files                       test files holding ``gpu`` tests (``mark.gpu`` in the text),
                                    one a line: what run.sh hands pytest (a file whose imports
                                    need something the GPU machine lacks must not be collected)
    collect --all ALL.txt FILE...   collect the gpu tests of FILE... here (in this process) and
                                    check: some collected, the same as ALL.txt (``pytest
                                    --collect-only -q -m gpu tests``) finds in the whole suite,
                                    and collecting them imports nothing that is neither on the
                                    GPU machine nor carried (``foreign_imports``)
    summary --mode M --state DIR --out OUT
                                    write OUT/summary.json from the step records and results;
                                    exit 0 only when every step passed

The test verdict (``tests_verdict``) reads pytest's JUnit XML: no failure, no error, at least
one test passed, and every skip one of ``ALLOWED_SKIPS`` (what cannot exist on the machine:
DALI, TensorRT), each named with its reason; any other skip fails the run.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set

ROOT = Path(__file__).resolve().parents[2]
#: skip reasons a GPU run accepts: what cannot be installed on the machine
ALLOWED_SKIPS = {
    "DALI (the ~200 MB wheel cannot travel)": re.compile(r"nvidia\.dali|\bDALI\b"),
    "TensorRT (not obtainable)": re.compile(r"tensorrt|TensorRT"),
}
GPU_MARK = re.compile(r"\bmark\.gpu\b")
OWN = "mmengine-music"  # this package's distribution (installed editable here)
#: distributions that cannot exist on the machine (their tests skip, naming them)
GUARDED = re.compile(r"nvidia[-_]dali|tensorrt")


def gpu_files(tests: Path = ROOT / "tests") -> List[str]:
    """``tests/test_*.py`` files whose text names the ``gpu`` marker, relative to the root."""
    return [str(p.relative_to(ROOT)) for p in sorted(tests.glob("test_*.py"))
            if GPU_MARK.search(p.read_text(encoding="utf-8"))]


def parse_collected(text: str) -> Dict[str, int]:
    """``pytest --collect-only -q`` output -> test file -> number of tests collected."""
    counts: Counter = Counter()
    for line in text.splitlines():
        if "::" in line and not line.startswith(("=", " ")):
            counts[line.split("::", 1)[0]] += 1
    return dict(counts)


def _closure(roots: Iterable[str], stop: Set[str]) -> Set[str]:
    """Canonical names of ``roots`` and, transitively, their requirements as installed here
    (markers evaluated for the GPU machine), not walking past names in ``stop``."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from bench.gpu import wheels

    todo, seen = list(roots), set()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen or name in stop:
            continue
        seen.add(name)
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [r.name for r in map(Requirement, reqs) if wheels.applies(r)]
    return seen


def carried() -> Set[str]:
    """What the GPU run carries: ``wheels.needed()`` and, transitively, the requirements of
    those distributions as installed here that the machine lacks."""
    from bench.gpu import wheels

    return _closure([r.name for r in wheels.needed()], wheels.machine_packages())


def guarded() -> Set[str]:
    """What cannot exist on the machine (``GUARDED``: DALI, TensorRT, as installed here) and
    what they pull in: their tests skip (``importorskip``), so their imports never run there."""
    from importlib import metadata

    from bench.gpu import wheels

    roots = [d.metadata["Name"] for d in metadata.distributions()
             if d.metadata["Name"] and GUARDED.match(d.metadata["Name"].lower())]
    return _closure(roots, wheels.machine_packages())


def foreign_imports(modules: Iterable[str]) -> Dict[str, List[str]]:
    """Top-level modules among ``modules`` that come from a distribution installed here but
    neither on the GPU machine, nor carried, nor ``guarded()``, nor this package: module ->
    distributions."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    from bench.gpu import wheels

    dists = metadata.packages_distributions()
    ok = wheels.machine_packages() | carried() | guarded() | {OWN}
    out = {}
    for top in sorted({m.split(".")[0] for m in modules}):
        if top in sys.stdlib_module_names or top not in dists:
            continue
        names = sorted({canonicalize_name(d) for d in dists[top]})
        if not set(names) & ok:
            out[top] = names
    return out


def collect_here(files: Sequence[str]) -> dict:
    """``pytest --collect-only -m gpu FILES`` in this process: node ids per file, and what the
    collection imported (modules new after pytest and its plugins had loaded)."""
    import pytest

    class Watch:
        before: Set[str] = set()
        ids: List[str] = []

        def pytest_sessionstart(self, session):
            self.before = set(sys.modules)

        def pytest_collection_finish(self, session):
            self.ids = [item.nodeid for item in session.items]

    watch = Watch()
    rc = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-m", "gpu", *files],
                     plugins=[watch])
    counts: Counter = Counter(i.split("::", 1)[0] for i in watch.ids)
    return {"rc": int(rc), "per_file": dict(counts),
            "imported": sorted(set(sys.modules) - watch.before)}


def allowed_skip(reason: str) -> Optional[str]:
    """The ``ALLOWED_SKIPS`` key matching a skip ``reason``, or None."""
    return next((k for k, rx in ALLOWED_SKIPS.items() if rx.search(reason)), None)


def tests_verdict(junit: Path) -> dict:
    """Outcomes of a pytest run from its JUnit XML: counts, every skip reason with its count,
    failures (test id and first line), and ``ok``."""
    root = ET.parse(junit).getroot()
    outcome: Counter = Counter()
    skips: Counter = Counter()
    unexpected, failures = [], []
    for case in root.iter("testcase"):
        test_id = "::".join(x for x in (case.get("classname"), case.get("name")) if x)
        bad = next((case.find(t) for t in ("failure", "error") if case.find(t) is not None), None)
        skip = case.find("skipped")
        if bad is not None:
            outcome["failed" if bad.tag == "failure" else "errors"] += 1
            failures.append(f"{test_id}: {(bad.get('message') or '').splitlines()[:1]}")
        elif skip is not None:
            outcome["skipped"] += 1
            reason = skip.get("message") or skip.text or ""
            skips[reason] += 1
            if allowed_skip(reason) is None:
                unexpected.append(f"{test_id}: {reason}")
        else:
            outcome["passed"] += 1
    ok = (outcome["passed"] > 0 and not outcome["failed"] and not outcome["errors"]
          and not unexpected)
    return {"ok": ok, **{k: outcome[k] for k in ("passed", "failed", "errors", "skipped")},
            "skip_reasons": {r: {"count": n, "allowed_as": allowed_skip(r)}
                             for r, n in skips.items()},
            "unexpected_skips": unexpected, "failures": failures[:50]}


def lstm_figures(path: Path) -> dict:
    """Key figures of a ``bench_gpu_lstm.py`` JSON: each contender's ratio to cuDNN per dtype,
    T and batch (>1: faster), and the contenders that were absent."""
    data = json.loads(path.read_text(encoding="utf-8"))
    ratios = {f"{r['dtype']} T={r['T']} B={r['batch']} {r['contender']}": round(r["vs_cudnn"], 3)
              for r in data["results"] if r["contender"] != "cudnn"}
    return {"device": data["meta"].get("device"), "workload": data["meta"].get("workload"),
            "vs_cudnn": ratios, "absent": data["meta"].get("absent", {})}


def engine_figures(path: Path) -> dict:
    """Key figures of a ``bench_gpu_frontend.py`` JSON: clips/s per suite, contender, batch."""
    data = json.loads(path.read_text(encoding="utf-8"))
    out = {}
    for suite in data["suites"]:
        for r in suite["results"]:
            key = f"{suite['suite']} B={r['batch']} {r['contender']}"
            out[key] = ({"skipped": r["skipped"]} if "skipped" in r
                        else {"clips_per_s": round(r["items_per_s"], 2),
                              "ratios": {k: round(v, 3) for k, v in r["ratios"].items()}})
    return out


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def summary(mode: str, state: Path, out: Path) -> dict:
    """The run's summary from ``state`` (``steps.jsonl``, ``env.json``, ``wheels.json``,
    ``collect.json``, ``build.json``) and the results under ``out``."""
    steps = [json.loads(x) for x in (state / "steps.jsonl").read_text().splitlines() if x]
    result = {"mode": mode, "ok": False, "steps": steps,
              "seconds": sum(s["seconds"] for s in steps)}
    for name in ("env", "wheels", "build", "collect"):
        data = _read_json(state / f"{name}.json")
        if data is not None:
            result[name] = data
    problems = [f"step {s['name']}: {s['status']}" for s in steps if s["status"] != "ok"]
    junit = out / "pytest-gpu.xml"
    if junit.exists():
        try:
            result["tests"] = tests_verdict(junit)
        except ET.ParseError as exc:
            result["tests"] = {"ok": False, "error": f"unreadable JUnit XML: {exc}"}
        if not result["tests"]["ok"]:
            problems.append("gpu tests: failures, errors or unexpected skips")
    elif mode == "gpu":
        problems.append("gpu tests: no JUnit XML (pytest did not finish)")
    bench = {}
    for name, reader in (("lstm-standard", lstm_figures), ("lstm-model", lstm_figures),
                         ("engine", engine_figures)):
        path = out / f"bench-{name}.json"
        if path.exists():
            try:
                bench[name] = reader(path)
            except (ValueError, KeyError) as exc:
                bench[name] = {"error": f"{type(exc).__name__}: {exc}"}
        elif mode == "gpu":
            bench[name] = {"error": "no JSON written (see run.log)"}
            problems.append(f"bench {name}: no results")
    if bench:
        result["bench"] = bench
    result["problems"] = problems
    result["ok"] = not problems
    result["files"] = sorted(p.name for p in out.iterdir() if p.is_file())
    if "summary.json" not in result["files"]:
        result["files"].append("summary.json")
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("gpu-files")
    c = sub.add_parser("collect")
    c.add_argument("files", nargs="+")
    c.add_argument("--all", type=Path, required=True, dest="all_output")
    c.add_argument("--json", type=Path)
    s = sub.add_parser("summary")
    s.add_argument("--mode", choices=["gpu", "dry-run"], required=True)
    s.add_argument("--state", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "gpu-files":
        for f in gpu_files():
            print(f)
        return 0
    if args.cmd == "collect":
        everywhere = parse_collected(args.all_output.read_text(encoding="utf-8"))
        here = collect_here(args.files)
        foreign = foreign_imports(here.pop("imported"))
        outside = sorted(set(everywhere) - set(args.files))
        report = {"tests": sum(here["per_file"].values()), **here,
                  "whole_suite": everywhere, "gpu_tests_outside_the_files": outside,
                  "foreign_imports": foreign}
        report["ok"] = (here["rc"] == 0 and report["tests"] > 0 and not outside
                        and here["per_file"] == everywhere and not foreign)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"collected {report['tests']} gpu tests in {len(here['per_file'])} files: "
              + ", ".join(f"{k} {v}" for k, v in here["per_file"].items()))
        if outside:
            print(f"gpu tests in files run.sh would not hand pytest: {outside}", file=sys.stderr)
        if here["per_file"] != everywhere:
            print(f"the whole suite collects other gpu tests: {everywhere}", file=sys.stderr)
        for mod, dists in foreign.items():
            print(f"collecting the gpu tests imports {mod} ({', '.join(dists)}): neither on "
                  "the GPU machine nor carried (bench/gpu/wheels.py)", file=sys.stderr)
        return 0 if report["ok"] else 1
    result = summary(args.mode, args.state, args.out)
    (args.out / "summary.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"summary ({args.mode}): {'ok' if result['ok'] else 'FAILED'} in "
          f"{result['seconds']:.0f} s; " + "; ".join(
              f"{s['name']} {s['status']} {s['seconds']:.0f}s" for s in result["steps"]))
    for p in result["problems"]:
        print(f"  problem: {p}")
    tests = result.get("tests") or {}
    for reason, info in (tests.get("skip_reasons") or {}).items():
        print(f"  skipped {info['count']}x ({info['allowed_as'] or 'NOT ALLOWED'}): {reason}")
    print(f"wrote {args.out / 'summary.json'}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
