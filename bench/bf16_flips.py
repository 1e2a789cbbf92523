"""Which clips a bf16 native engine decides differently from fp32, by what margin, and what the
fp32 recheck of close calls (``EngineConfig.bf16_recheck_margin``) costs and fixes.

For a trained run: native engines fp32 and bf16 on the cached features of the validation and
test splits. The bf16 engine runs three ways: without its recheck on the CPU's best ISA
(AVX512-BF16: bf16 convolution activations), without it forced to AVX-512 (bf16 weights, fp32
activations), and as shipped (best ISA, close calls rerun in fp32). Prints per split the clips
whose label changes, the fp32 top-two margin of each, the largest change of the decision
margin (``native_model.decision_margin``) between bf16 and fp32 (what the recheck margin must
exceed), and the share of clips the recheck reran (not run in CI).

With ``--time R``: what the recheck costs, on the test split's real clips at batch 1 (the
close calls included): native fp32, native bf16 as shipped, native bf16 without the recheck
and torch eager fp32, each warm in its own process through ``mmengine.harness``, R
interleaved rounds, 2 threads each; one call runs every test clip, one at a time; reported as
ms per clip (median over rounds) and ratios.

    python bench/bf16_flips.py RUN DATA [--time 5]   # e.g. runs/folk-exp3/fusion/seed0 folk
"""
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    import argparse

    from mmengine._ext import require_native_extension
    from mmengine.api import load_features
    from mmengine.export import build_engine
    from mmengine.models import batch_from_arrays
    from mmengine.runtime.engine import Engine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="training run folder")
    ap.add_argument("data", help="its data set (folk, vocal, or a manifest)")
    ap.add_argument("--time", type=int, default=0, metavar="R",
                    help="also time the test clips at batch 1, R interleaved rounds")
    ap.add_argument("--json", help="with --time: write the harness result here")
    args = ap.parse_args(argv)
    C = require_native_extension()
    from mmengine.runtime.native_model import probability_margin

    fs, _ = load_features(args.data, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        engines = {d: Engine.load(build_engine(args.run, Path(tmp) / f"{d}.mme",
                                               backend="native", dtype=d), backend="native")
                   for d in ("fp32", "bf16")}
        margin0 = engines["bf16"].runner.recheck_margin
        print(f"run {args.run}; recheck margin {margin0}")
        for split in ("val", "test"):
            batch = batch_from_arrays(fs.subset(split))
            n = batch["mfcc"].shape[0]
            out = {}
            for name, dtype, isa, margin in (
                    ("fp32", "fp32", "auto", 0.0), ("bf16 no recheck", "bf16", "auto", 0.0),
                    ("bf16 no recheck", "bf16", "avx512", 0.0),
                    ("bf16 as shipped", "bf16", "auto", margin0)):
                eng = engines[dtype]
                eng.runner.recheck_margin = margin if dtype == "bf16" else 0.0
                eng.runner.calls = eng.runner.rechecked = 0
                C.set_isa(isa)
                try:
                    key = f"{name} ({C.selected_isa()})"
                    out[key] = (np.concatenate([
                        eng.predict_features({k: batch[k][s:s + 32].numpy()
                                              for k in eng.input_names})
                        for s in range(0, n, 32)]), eng.runner.rechecked)
                finally:
                    C.set_isa("auto")
            ref = next(iter(out.values()))[0]
            m_ref = probability_margin(ref, engines["fp32"].multilabel)
            print(f"{split}: {n} clips; reference {next(iter(out))}")
            for name, (p, rechecked) in out.items():
                flips = np.nonzero(p.argmax(1) != ref.argmax(1))[0]
                m = probability_margin(p, engines["fp32"].multilabel)
                print(f"  {name:32s} clips changed {len(flips):3d}  max |dp| "
                      f"{np.abs(p - ref).max():.2e}  max |d margin| {np.abs(m - m_ref).max():.2e}"
                      f"  rechecked {rechecked}/{n}  their fp32 margins "
                      f"{m_ref[flips].round(5).tolist()}")
            print("  smallest fp32 margins:", np.sort(m_ref)[:5].round(5).tolist())
        if args.time:
            time_test_clips(args, engines, batch_from_arrays(fs.subset("test")), Path(tmp))
    return 0


def time_test_clips(args, engines, batch, tmp: Path) -> None:
    """The ``--time`` part (see the module docstring)."""
    from mmengine.export import build_engine
    from mmengine.harness import Contender, Workload, run_interleaved

    names = engines["fp32"].input_names
    n = batch["mfcc"].shape[0]
    npz = tmp / "test-inputs.npz"
    np.savez(npz, **{k: batch[k].numpy() for k in names})
    torch_engine = build_engine(args.run, tmp / "torch.mme", backend="torch", dtype="fp32")
    f = "bench.contenders:model_factory"
    cons = [Contender("native-fp32", f, {"engine": engines["fp32"].path, "backend": "native"}),
            Contender("native-bf16", f, {"engine": engines["bf16"].path, "backend": "native"}),
            Contender("native-bf16-no-recheck", f, {"engine": engines["bf16"].path,
                                                    "backend": "native", "recheck_margin": 0}),
            Contender("torch-eager", f, {"engine": str(torch_engine), "backend": "torch"})]
    w = Workload(f"{args.data}-test-clips", {"kind": "clips", "npz": str(npz), "clips": n},
                 "clip sets")
    res = run_interleaved(cons, [w], [1], rounds=args.time, threads=2, target_s=0.0,
                          max_reps=1, peak_in=None, suite="bf16-recheck")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(res, indent=1))
    ms = {r["contender"]: 1e3 * r["median_s"] / n for r in res["results"]}
    print(f"\ntest split, {n} clips at batch 1, {args.time} interleaved rounds, 2 threads each "
          f"(ms per clip, median over rounds):")
    for name, info in res["contenders"].items():
        info = info.get("info", info) if isinstance(info, dict) else info
        print(f"  {name:24s} {ms.get(name, float('nan')):7.2f} ms  ({info})")
    t = ms.get("torch-eager")
    for name in ("native-fp32", "native-bf16", "native-bf16-no-recheck"):
        if name in ms and t:
            print(f"  torch-eager / {name}: {t / ms[name]:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
