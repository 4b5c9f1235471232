"""Prints throughput and ratios from criterion's estimates.

Within a benchmark group, functions are named `<implementation>/<variant>`; the first
implementation listed in BASELINES that appears in the group is the baseline, and every other
implementation is reported as a ratio of its throughput to the baseline's for the same variant.
"""
import json
import pathlib
import sys

BASELINES = ["raw_cryptoki", "softhsm2", "direct_tss_esapi", "in_process", "reference"]


def main(root: str) -> None:
    root_path = pathlib.Path(root)
    if not root_path.is_dir():
        sys.exit(f"no criterion output under {root}")
    for group in sorted(p for p in root_path.iterdir() if p.is_dir() and p.name != "report"):
        results = {}
        for est in group.glob("*/*/new/estimates.json"):
            impl, variant = est.parts[-4], est.parts[-3]
            ns = json.loads(est.read_text())["mean"]["point_estimate"]
            results[(impl, variant)] = ns
        if not results:
            continue
        impls = sorted({i for i, _ in results})
        base = next((b for b in BASELINES if b in impls), impls[0])
        print(f"\n{group.name} (baseline: {base})")
        for (impl, variant), ns in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            ops = 1e9 / ns
            b = results.get((base, variant))
            ratio = f"{b / ns:6.3f}x of {base}" if b and impl != base else ""
            print(f"  {impl:>24}/{variant:<10} {ns / 1000:9.2f} us/op {ops:12,.0f} ops/s  {ratio}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
