"""Summarise the two gpu_check.sh training runs into one JSON (epoch seconds, kNN, ratios)."""

import json
import sys
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
    gpu, cpu = load(Path(sys.argv[1])), load(Path(sys.argv[2]))
    out = {"gpu_path": gpu, "cpu_path": cpu}
    if gpu["median_epoch_s_after_first"] and cpu["median_epoch_s_after_first"]:
        out["cpu_over_gpu_epoch_time"] = (cpu["median_epoch_s_after_first"]
                                          / gpu["median_epoch_s_after_first"])
        out["speedup_vs_official_66s"] = 66.0 / gpu["median_epoch_s_after_first"]
    for name, run in (("gpu", gpu), ("cpu", cpu)):
        s = run["summary"]
        out[f"knn_{name}"] = s.get("knn_top1")
        out[f"box_iou_{name}"] = s.get("box_iou_gt")
    Path(sys.argv[3]).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if not k.endswith("_path")}, indent=2))


if __name__ == "__main__":
    main()
