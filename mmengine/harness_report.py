"""The output of the benchmark harness: the machine a result was measured on
(``machine_info``), the Markdown tables of ``run_interleaved`` results (``markdown``) and the
JSON / Markdown files (``write_outputs``). Separate from the process running
(``mmengine.harness``, which re-exports these names): it formats results already measured, in
any process, and starts none.
"""
from __future__ import annotations

import importlib
import json
import os
import platform
from pathlib import Path
from typing import Sequence

from .harness_worker import PEAK_N


# ----------------------------------------------------------------------------- output
def machine_info() -> dict:
    """CPU model, core count, Python / library versions (what is importable)."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for mod in ("torch", "numpy", "librosa", "onnxruntime", "nvidia.dali", "soundfile"):
        try:
            versions[mod] = importlib.import_module(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = None
    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "versions": versions}


def _fmt(x, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and x != x) else format(x, spec)


def markdown(result: dict) -> str:
    """Markdown table(s) of one ``run_interleaved`` result, one table per workload."""
    names = list(result["contenders"])
    peak = result.get("gemm_peak_flops")
    out = [f"### {result['suite'] or 'benchmark'}", ""]
    s = result["settings"]
    out.append(f"threads={s['threads']}, rounds={s['rounds']}, medians over rounds of each "
               f"round's best call; contenders interleaved, one process each. GEMM peak "
               f"(torch fp32 {PEAK_N}^3): "
               + (f"{peak / 1e9:.1f} GFLOP/s" if peak else "not measured") + ".")
    for c, info in result["contenders"].items():
        out.append(f"- `{c}`: " + (f"SKIPPED ({info['skipped']})" if "skipped" in info
                                   else info.get("info") or info.get("factory", "")))
    for n in result.get("notes", []):
        if "skipped" not in n:
            out.append(f"- note: {n}")
    for w in result["workloads"]:
        rows = [r for r in result["results"] if r["workload"] == w["name"]]
        has_flops = w["flops_per_item"] > 0
        unit = w["unit"]
        hdr = ["batch", "contender", "median ms", f"{unit}/s", "p50 ms", "p99 ms", "peak RSS MiB"]
        if has_flops:
            hdr += ["GFLOP/s", "% GEMM peak"]
        hdr += [f"x vs {p}" for p in names]
        out += ["", f"**{w['name']}** ({_describe(w)})", "",
                "| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
        for r in rows:
            if "skipped" in r:
                cells = [str(r["batch"]), r["contender"], "skipped"] + [""] * (len(hdr) - 3)
            else:
                cells = [str(r["batch"]), r["contender"], _fmt(r["median_s"] * 1e3, ".3f"),
                         _fmt(r["items_per_s"], ".2f"), _fmt(r["p50_s"] * 1e3, ".3f"),
                         _fmt(r["p99_s"] * 1e3, ".3f"), _fmt(r["peak_rss_mib"], ".0f")]
                if has_flops:
                    fr = r.get("frac_gemm_peak")
                    cells += [_fmt(r.get("gflops"), ".1f"),
                              _fmt(None if fr is None else 100 * fr, ".1f")]
                cells += ["" if p == r["contender"] else _fmt(r["ratios"].get(p), ".2f")
                          for p in names]
            out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("`x vs P` = median time of P / median time of this row (> 1: this row is faster).")
    return "\n".join(out) + "\n"


def _describe(w: dict) -> str:
    p = w["params"]
    keep = {k: v for k, v in p.items() if isinstance(v, (int, float, str)) and k != "kind"}
    return ", ".join(f"{k}={v}" for k, v in keep.items()) or p.get("kind", "")


def write_outputs(results: Sequence[dict], json_path=None, md_path=None) -> str:
    """Markdown of all ``results``; also written to ``md_path`` and, with machine info, as JSON
    to ``json_path`` when given. Returns the Markdown."""
    md = "\n".join(markdown(r) for r in results)
    if json_path:
        Path(json_path).write_text(json.dumps({"machine": machine_info(), "suites": list(results)},
                                              indent=1, default=str))
    if md_path:
        Path(md_path).write_text(md)
    return md
