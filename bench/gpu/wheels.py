"""The Python wheels the bare GPU machine lacks: which ones, and whether a folder holds them.

The GPU machine (DEVELOPERS.md, "GPU runs") has Python 3.12 on x86-64 Linux with torch (CUDA
13), Triton, ONNX Runtime, CMake, ninja, pybind11 and nvcc, and the distributions listed in
``gpu_machine_packages.txt`` beside this file; nothing can be downloaded there. ``prepare.sh``
fetches here, into an ignored folder that travels with the run, the wheels of

* ``needed()``: what the GPU run imports that the machine lacks: the runtime dependencies of
  ``pyproject.toml`` (the package imports soundfile and soxr for audio I/O, and the GPU tests
  and the engine benchmark go through it) plus ``EXTRA`` (the symbolic front end's
  ``pretty_midi`` and its ``mido``, from the ``data`` extra), less what the machine holds;
* and, until nothing is missing, every requirement of those wheels (their METADATA, markers
  evaluated for CPython 3.12 on x86-64 Linux, extras left out) that neither the folder nor
  the machine holds (``missing(folder)``): cffi and pycparser for soundfile,
  importlib_resources for pretty_midi when this was written.

What is not carried, and why: torch, numpy, scipy, scikit-learn, safetensors, tqdm, matplotlib
(on the machine); librosa, music21, hypothesis' plugins, DALI (~200 MB) and TensorRT (not
obtainable): no GPU test or benchmark needs them; the tests that do skip, naming them.

Commands (``python bench/gpu/wheels.py CMD``; none uses the network):

    needed              the requirements to fetch first, one a line, pinned to the version
                        installed here when there is one (the versions CI tests with)
    missing DIR         requirements of DIR's wheels that neither DIR nor the machine holds
    check DIR [--json F]  every wheel installable there (CPython 3.12, manylinux x86-64 or
                        pure Python), one version of each, nothing missing, total <= 64 MiB
    plan [--json F]     the listing alone, checked offline (what CI can check without wheels)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set
from zipfile import ZipFile

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MACHINE_LIST = HERE / "gpu_machine_packages.txt"
#: beyond pyproject's runtime dependencies: the symbolic front end (``data`` extra)
EXTRA = ("mido", "pretty_midi")
#: pyproject extras the GPU run uses whole: ``train`` (torch: the torch/cuda/triton backends
#: and the GPU tests; the core install classifies without it)
RUN_EXTRAS = ("train",)
#: the device tool's limit on what travels with a run (working tree and carried paths)
LIMIT_BYTES = 64 * 1024 * 1024
PYTHON = (3, 12)
#: glibc 2.17 (manylinux2014) to 2.28: wheels that load on the machine's Linux
PLATFORMS = ([f"manylinux_2_{n}_x86_64" for n in range(28, 16, -1)]
             + ["manylinux2014_x86_64", "manylinux1_x86_64"])
#: marker environment of the GPU machine's interpreter
TARGET_ENV = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
              "implementation_name": "cpython", "platform_python_implementation": "CPython",
              "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
              "platform_machine": "x86_64", "extra": ""}


def machine_packages() -> Set[str]:
    """Canonical names of the distributions on the GPU machine."""
    lines = MACHINE_LIST.read_text(encoding="utf-8").splitlines()
    return {canonicalize_name(x.strip()) for x in lines if x.strip() and not x.startswith("#")}


def supported_tags() -> Set[str]:
    """Wheel tags the machine's CPython 3.12 on x86-64 Linux installs (as strings)."""
    tags = list(cpython_tags(PYTHON, abis=["cp312"], platforms=PLATFORMS))
    tags += compatible_tags(PYTHON, "cp312", PLATFORMS)
    return {str(t) for t in tags}


def _pyproject_dependencies() -> List[str]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError as exc:
            raise SystemExit("wheels.py needs Python >= 3.11 (tomllib) or tomli to read "
                             "pyproject.toml") from exc
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = data["project"].get("optional-dependencies", {})
    return list(data["project"]["dependencies"]) + [r for e in RUN_EXTRAS for r in extras.get(e, [])]


def applies(req: Requirement) -> bool:
    """True when ``req`` is needed on the machine (its marker holds there, no extra)."""
    return req.marker is None or req.marker.evaluate(TARGET_ENV)


def pinned(req: Requirement) -> str:
    """``name==version`` with the version installed here when it satisfies ``req``, else the
    requirement as written (name and specifier)."""
    try:
        here = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        here = None
    if here is not None and req.specifier.contains(here, prereleases=True):
        return f"{req.name}=={here}"
    return f"{req.name}{req.specifier}"


def needed() -> List[Requirement]:
    """Top-level requirements the GPU run needs and the machine lacks (pyproject's runtime
    dependencies and ``EXTRA``, markers evaluated for the machine)."""
    have = machine_packages()
    reqs = [Requirement(r) for r in _pyproject_dependencies()] + [Requirement(n) for n in EXTRA]
    return [r for r in reqs if applies(r) and canonicalize_name(r.name) not in have]


def wheel_requirements(path: Path) -> List[Requirement]:
    """``Requires-Dist`` of a wheel that apply on the machine."""
    with ZipFile(path) as zf:
        meta = next(n for n in zf.namelist()
                    if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        text = zf.read(meta).decode("utf-8")
    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in text.splitlines()
            if line.startswith("Requires-Dist:")]
    return [r for r in reqs if applies(r)]


def wheels(folder: Path) -> Dict[str, Path]:
    """Canonical name -> wheel file in ``folder`` (raises on two versions of one name)."""
    out: Dict[str, Path] = {}
    for p in sorted(Path(folder).glob("*.whl")):
        name = canonicalize_name(parse_wheel_filename(p.name)[0])
        if name in out:
            raise ValueError(f"{folder}: two wheels of {name}: {out[name].name}, {p.name} "
                             "(pip would refuse the install; delete one)")
        out[name] = p
    return out


def missing(folder: Path) -> List[Requirement]:
    """Requirements of the wheels in ``folder`` that neither the folder nor the machine holds
    (each name once, in the order met)."""
    have = machine_packages() | set(wheels(folder))
    out: Dict[str, Requirement] = {}
    for path in wheels(folder).values():
        for req in wheel_requirements(path):
            name = canonicalize_name(req.name)
            if name not in have and name not in out:
                out[name] = req
    return list(out.values())


def _size(paths: Iterable[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def check(folder: Path) -> dict:
    """Everything ``run.sh`` relies on in ``folder``: a report dict with ``ok`` and
    ``problems`` (each a sentence)."""
    problems: List[str] = []
    try:
        found = wheels(folder)
    except ValueError as exc:
        return {"ok": False, "problems": [str(exc)], "folder": str(folder)}
    tags = supported_tags()
    rows = []
    for name, p in found.items():
        _, version, _, wheel_tags = parse_wheel_filename(p.name)
        ok = any(str(t) in tags for t in wheel_tags)
        if not ok:
            problems.append(f"{p.name}: no tag installable by CPython 3.12 on manylinux x86-64")
        rows.append({"name": name, "version": str(version), "file": p.name,
                     "bytes": p.stat().st_size, "installable": ok})
    for req in needed():
        if canonicalize_name(req.name) not in found:
            problems.append(f"{req.name}: needed on the GPU machine, no wheel in {folder}")
    for req in missing(folder):
        problems.append(f"{req}: required by a wheel in {folder}, neither there nor on the "
                        "machine")
    total = _size(found.values())
    if total > LIMIT_BYTES:
        problems.append(f"{total / 2**20:.1f} MiB of wheels > the 64 MiB a run can carry")
    return {"ok": not problems, "problems": problems, "folder": str(folder), "wheels": rows,
            "total_bytes": total, "limit_bytes": LIMIT_BYTES}


def plan() -> dict:
    """The listing alone (no wheels, no network): what is needed, what the machine holds."""
    have = machine_packages()
    deps = [Requirement(r) for r in _pyproject_dependencies()]
    needs = needed()
    problems = []
    if not needs:
        problems.append("nothing to carry: has the GPU machine's list taken in soundfile?")
    for r in needs:
        if canonicalize_name(r.name) in have:
            problems.append(f"{r.name} is both needed and on the machine")
    return {"ok": not problems, "problems": problems,
            "needed": [pinned(r) for r in needs],
            "on_machine": sorted(r.name for r in deps if canonicalize_name(r.name) in have),
            "machine_packages": len(have)}


def _emit(report: dict, json_path: Optional[Path]) -> int:
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for p in report["problems"]:
        print(f"wheels: {p}", file=sys.stderr)
    return 0 if report["ok"] else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("needed", help="top-level requirements to fetch, pinned")
    sub.add_parser("missing", help="requirements of DIR's wheels not covered").add_argument(
        "folder", type=Path)
    c = sub.add_parser("check", help="check a wheel folder")
    c.add_argument("folder", type=Path)
    c.add_argument("--json", type=Path)
    pl = sub.add_parser("plan", help="check the listing offline")
    pl.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.cmd in ("needed", "missing"):  # one a line; nothing at all when none
        for req in needed() if args.cmd == "needed" else missing(args.folder):
            print(pinned(req))
        return 0
    if args.cmd == "check":
        report = check(args.folder)
        if report.get("wheels"):
            print(f"wheels: {len(report['wheels'])} in {args.folder}, "
                  f"{report['total_bytes'] / 2**20:.2f} MiB (limit 64 MiB): "
                  + ", ".join(f"{w['name']} {w['version']}" for w in report["wheels"]))
        return _emit(report, args.json)
    report = plan()
    print(f"wheels: to carry {', '.join(report['needed'])}; on the machine already: "
          f"{', '.join(report['on_machine'])}")
    return _emit(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
