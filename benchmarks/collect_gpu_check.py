"""Summarise the two gpu_check.sh training runs into one JSON (epoch seconds, kNN, ratios)."""

import argparse
import json
from pathlib import Path


def load(run: Path) -> dict:
    """Epoch records, box updates and summary of one run folder (empty if it did not finish)."""
    metrics = run / "metrics.jsonl"
    rows = [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.is_file() else []
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() \
        else {}
    secs = [r["seconds"] for r in rows]
    steady = sorted(secs[1:])[len(secs[1:]) // 2] if len(secs) > 1 else None
    return {"epochs_done": len(rows), "epoch_seconds": secs, "median_epoch_s_after_first": steady,
            "data_seconds": [r["data_seconds"] for r in rows],
            "loss": [r["loss"] for r in rows], "summary": summary}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("gpu_run")
    p.add_argument("cpu_run")
    p.add_argument("out")
    p.add_argument("--compiled", help="run folder of the GPU path with train.compile=true")
    args = p.parse_args()
    gpu, cpu = load(Path(args.gpu_run)), load(Path(args.cpu_run))
    out = {"gpu_path": gpu, "cpu_path": cpu}
    if args.compiled:
        comp = load(Path(args.compiled))
        out["gpu_path_compiled"] = comp
        # False when the compiler failed and the run fell back to eager (CompileFailedWarning)
        out["gpu_compiled_really_compiled"] = comp["summary"].get("compiled")
        out["median_epoch_s_gpu_compiled"] = comp["median_epoch_s_after_first"]
        if comp["median_epoch_s_after_first"] and comp["summary"].get("compiled"):
            out["speedup_vs_official_66s_compiled"] = 66.0 / comp["median_epoch_s_after_first"]
    if gpu["median_epoch_s_after_first"] and cpu["median_epoch_s_after_first"]:
        out["cpu_over_gpu_epoch_time"] = (cpu["median_epoch_s_after_first"]
                                          / gpu["median_epoch_s_after_first"])
        out["speedup_vs_official_66s"] = 66.0 / gpu["median_epoch_s_after_first"]
    for name, run in (("gpu", gpu), ("cpu", cpu)):
        s = run["summary"]
        out[f"knn_{name}"] = s.get("knn_top1")
        out[f"box_iou_{name}"] = s.get("box_iou_gt")
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if not k.endswith("_path")}, indent=2))


if __name__ == "__main__":
    main()
