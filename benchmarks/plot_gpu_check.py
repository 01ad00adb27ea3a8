"""Figure of a gpu_check.json: seconds per epoch of each path against the official code's."""

import argparse
import json
from pathlib import Path

from ccrop.viz import plot_epoch_times

#: The official implementation's CIFAR-10 SimCLR epoch on one H100 with 16 CPU cores
#: (docs/design.md).
OFFICIAL_S = 66.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("gpu_check", help="gpu_check.json written by benchmarks/gpu_check.sh")
    p.add_argument("--out", default="docs/figures/speed.png")
    p.add_argument("--title", default="")
    p.add_argument("--target", type=float, default=2.5, help="target seconds per epoch")
    p.add_argument("--compiled", help="another gpu_check.json whose compiled run to draw too")
    args = p.parse_args()
    d = json.loads(Path(args.gpu_check).read_text())
    if args.compiled:
        d["gpu_path_compiled"] = json.loads(Path(args.compiled).read_text())["gpu_path_compiled"]
    times = {"official code (docs/design.md)": OFFICIAL_S}
    for key, label in (("cpu_path", "ccrop, CPU view path (PIL workers)"),
                       ("gpu_path", "ccrop, GPU view path"),
                       ("gpu_path_compiled", "ccrop, GPU view path + torch.compile")):
        run = d.get(key, {})
        median = run.get("median_epoch_s_after_first")
        fell_back = run.get("summary", {}).get("compiled") is False and key.endswith("compiled")
        if median and not fell_back:
            times[label] = median
    print(plot_epoch_times(times, args.out, args.title, reference="official code (docs/design.md)",
                           target=args.target))


if __name__ == "__main__":
    main()
