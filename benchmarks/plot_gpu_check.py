"""Figure of a gpu_check.json: seconds per epoch of each path against the official code's."""

import argparse
import json
import math
import textwrap
from collections.abc import Mapping
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: The official implementation's CIFAR-10 SimCLR epoch on one H100 with 16 CPU cores
#: (docs/design.md).
OFFICIAL_S = 66.0


def plot_epoch_times(times: Mapping[str, float], path: str | Path, title: str = "",
                     reference: str | None = None, target: float | None = None) -> Path:
    """Horizontal bars of seconds per epoch, each labelled with its speed-up over ``reference``.

    Args:
        times: ``{label: seconds per epoch}`` (> 0), drawn top to bottom in order.
        path: output file (``.png`` added when it has no suffix).
        title: figure title (name the device and the setting).
        reference: the label speed-ups are relative to (default: the slowest entry).
        target: optional target seconds, drawn as a dashed line.

    Raises:
        ValueError: no entries, a non-positive or non-finite time, or an unknown ``reference``.
    """
    if not times:
        raise ValueError("times: expected at least one {label: seconds} entry")
    bad = {k: v for k, v in times.items() if not (math.isfinite(v) and v > 0)}
    if bad:
        raise ValueError(f"times: seconds must be finite and > 0, got {bad}")
    reference = max(times, key=times.get) if reference is None else reference
    if reference not in times:
        raise ValueError(f"reference {reference!r} is not one of {list(times)}")
    labels, secs = list(times), [float(v) for v in times.values()]
    fig = Figure(figsize=(7, 0.6 * len(labels) + 1.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ys = list(range(len(labels)))[::-1]  # the first entry on top
    ax.barh(ys, secs, color=["#888888" if k == reference else "#2a7ab9" for k in labels])
    ax.set_xscale("log")
    for y, s in zip(ys, secs):
        ax.text(s * 1.05, y, f"{s:.2f} s  ({times[reference] / s:.1f}x)", va="center",
                fontsize=8)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_xlim(min(secs) / 1.5, max(secs) * 4)
    if target is not None:
        ax.axvline(target, color="#c0392b", ls="--", lw=1)
        ax.text(target, ys[-1] - 0.55, f" target {target:g} s", color="#c0392b", fontsize=8)
    ax.set_xlabel("seconds per epoch (log scale)")
    fig.suptitle(textwrap.fill(title, 90), fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    out = Path(path) if Path(path).suffix else Path(path).with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


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
