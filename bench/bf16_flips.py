"""Which test clips a bf16 native engine decides differently from fp32, and by what margin.

For a trained run: native engines fp32 and bf16 on the test split's cached features; the bf16
engine once on the CPU's best ISA (AVX512-BF16: bf16 convolution activations) and once forced to
AVX-512 (bf16 weights, fp32 activations). Prints the clips whose label changes, the fp32 top-two
margin of each, and the smallest margins of the split (not run in CI).

    python bench/bf16_flips.py RUN DATA      # e.g. runs/folk-exp3/fusion/seed0 folk
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

    from mmengine._ext import require_native
    from mmengine.api import load_features
    from mmengine.export import build_engine
    from mmengine.models import batch_from_arrays
    from mmengine.runtime.engine import Engine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="training run folder")
    ap.add_argument("data", help="its data set (folk, vocal, or a manifest)")
    args = ap.parse_args(argv)
    C = require_native()
    fs, _ = load_features(args.data, progress=False)
    batch = batch_from_arrays(fs.subset("test"))
    n = batch["mfcc"].shape[0]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype, isas in (("fp32", ["auto"]), ("bf16", ["auto", "avx512"])):
            path = build_engine(args.run, Path(tmp) / f"{dtype}.mme", backend="native",
                                dtype=dtype)
            eng = Engine.load(path, backend="native")
            for isa in isas:
                C.set_isa(isa)
                try:
                    out[f"{dtype} ({C.selected_isa()})"] = np.concatenate([
                        eng.predict_features({k: batch[k][s:s + 32].numpy()
                                              for k in eng.input_names})
                        for s in range(0, n, 32)])
                finally:
                    C.set_isa("auto")
    ref = next(iter(out.values()))
    top2 = np.sort(ref, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    print(f"run {args.run}, {n} test clips; reference: {next(iter(out))}")
    for name, p in out.items():
        flips = np.nonzero(p.argmax(1) != ref.argmax(1))[0]
        print(f"{name:22s} clips changed {len(flips):3d}  max |dp| {np.abs(p - ref).max():.2e}  "
              f"their fp32 margins {margin[flips].round(5).tolist()}")
    print("smallest fp32 margins of the split:", np.sort(margin)[:5].round(5).tolist())
    return 0


if __name__ == "__main__":
    sys.exit(main())
