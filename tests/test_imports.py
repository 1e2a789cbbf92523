"""The package's import graph has no circle and runs down the layers of README's map (issue 16).

Every import statement of every module under ``mmengine/`` counts, the ones inside functions
too (a lazy import is still an arrow between layers: it only moves the circle from import time
to call time). The one exception is the package root: ``mmengine/__init__.py`` imports only
``mmengine.config`` when it is imported and resolves its public names (``mmengine.train``,
``mmengine.Engine``, ...) on first use, and modules read ``__version__`` from it; arrows into
and out of the root are left out.
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "mmengine"


def module_names():
    out = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def import_graph():
    """{module: set of mmengine modules it imports anywhere in its code}."""
    mods = module_names()
    edges = {}
    for mod, f in mods.items():
        is_pkg = f.name == "__init__.py"
        here = mod.split(".") if is_pkg else mod.split(".")[:-1]
        out = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[:len(here) - (node.level - 1)]
                    name = ".".join(base + ([node.module] if node.module else []))
                else:
                    name = node.module or ""
                for alias in node.names:
                    sub = f"{name}.{alias.name}"
                    out.add(sub if sub in mods else name)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
        edges[mod] = {m for m in out if m in mods and m != mod and m != "mmengine"}
    edges["mmengine"] = set()
    return edges


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, comps, counter = {}, {}, set(), [], [], [0]
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        comps.append(sorted(comp))
    return comps


def test_finder_sees_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_reads_lazy_and_relative_imports():
    g = import_graph()
    assert "mmengine.runtime.native_model" in g["mmengine.runtime.native_backend"]  # lazy
    assert "mmengine.config" in g["mmengine.export"]


def test_no_import_circle():
    found = cycles(import_graph())
    g = import_graph()
    detail = [[f"{a} -> {b}" for a in comp for b in sorted(g[a]) if b in comp] for comp in found]
    assert not found, f"import circles: {detail}"


#: the layers of README's "Map of the house", bottom (0) to top; a module may import its own
#: layer or any below
LAYERS = {
    "errors": 0, "config": 0, "config_engine": 0, "_ext": 0,
    "data": 1,
    "features": 2,
    "models": 3, "metrics": 3,
    "schema": 4, "spec": 4, "checkpoint": 4, "training": 4, "evaluation": 4, "distributed": 4,
    "export": 5, "runtime": 5,
    "api": 6, "cli": 6, "batch": 6, "bench": 6, "harness": 6, "flops": 6, "__main__": 6,
    "batch_inputs": 6, "batch_store": 6, "batch_runners": 6,
    "training_data": 4, "training_schedule": 4, "training_state": 4,
    "evaluation_scoring": 4, "evaluation_reports": 4,
    "harness_stats": 6, "harness_worker": 6, "harness_report": 6, "cli_data": 6,
}
#: upward imports still to remove (README names them)
KNOWN_UPWARD: set = set()  # none left: the card's baselines run from the features layer


def layer(module: str) -> int:
    top = module.split(".")[1]
    assert top in LAYERS, f"{module}: add its top-level name to LAYERS (and to README's map)"
    return LAYERS[top]


def test_imports_run_down_the_layers():
    g = import_graph()
    upward = {(a, b) for a, targets in g.items() if a != "mmengine" for b in targets
              if layer(b) > layer(a)}
    assert upward <= KNOWN_UPWARD, f"new upward imports: {sorted(upward - KNOWN_UPWARD)}"
    gone = sorted(KNOWN_UPWARD - upward)
    assert not gone, f"gone (drop them here and in README): {gone}"
