#!/usr/bin/env bash
# Prepared GPU check (issue: ImageNet scale). One H100/H200 with 16 cores, under 8 minutes.
# Writes JSON to $OUT; imagenet_check.json holds the summary and the targets as pass/fail.
#   1. make: N synthetic JPEGs of ImageNet-like sizes (quality 90, 100 class folders) under
#      /tmp with every core (benchmarks/bench_decode.py; procedural content, no downloads).
#   2. loaders: images/s of each data path alone, WORKERS DataLoader workers: GPUSource (decode
#      workers + device views), the official pipeline (torchvision ImageFolder + PIL
#      RandomResizedCrop/ColorJitter/grayscale/blur/flip, two views), DecodedImages and
#      loc_loader with and without the DCT-reduced decode, batched nvjpeg decode_jpeg on CUDA.
#   3. pretrain: `ccrop pretrain` MoCo v2 ResNet-50 on the folder, data.pipeline=gpu, bf16,
#      channels_last, STEPS steps an epoch, 2 epochs, a box update of the whole folder at 224 px
#      after epoch 1: data wait share of the steps, box update seconds.
#   4. step: the bare MoCo v2 ResNet-50 training step (ccrop.bench.bench_step: fp32, bf16 +
#      channels_last), random input, no data.
#   5. decode1: one-process decoder rates (full PIL decode, torch resize, draft, torchvision).
#   6. step_compiled: the step again with torch.compile (first call compiles, not timed).
# Stages run in order of importance; each has its own time limit (sum 435 s; ~5 min expected).
# Usage: OUT=some/dir bash benchmarks/imagenet_check.sh
#   (N, SIZE, WORKERS, BATCH, STEPS, DEVICE, WIDTH, PATH_SECONDS, STAGES override), on a CPU:
#   OUT=/tmp/ic N=64 SIZE=32 DEVICE=cpu bash benchmarks/imagenet_check.sh
# A GPU machine without omegaconf: first `pip download --no-deps omegaconf antlr4-python3-runtime==4.13.2
# -d .whl` here (git-ignored) and carry `.whl`; the script installs them to /tmp/site.
set -u
OUT=${OUT:-benchmarks/results/imagenet_check}
mkdir -p "$OUT"
. "$(dirname "$0")/device_env.sh"
DEVICE=${DEVICE:-$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")}
CPU=$([ "$DEVICE" = cpu ] && echo 1 || echo 0)
CORES=$(python3 -c "import os; print(len(os.sched_getaffinity(0)))")  # nproc obeys OMP_NUM_THREADS
N=${N:-20000}; SIZE=${SIZE:-224}; WORKERS=${WORKERS:-$CORES}
BATCH=${BATCH:-$([ $CPU = 1 ] && echo 8 || echo 256)}
STEPS=${STEPS:-$([ $CPU = 1 ] && echo 2 || echo 40)}
WIDTH=${WIDTH:-$([ $CPU = 1 ] && echo 8 || echo 64)}
PATH_SECONDS=${PATH_SECONDS:-$([ $CPU = 1 ] && echo 1 || echo 6)}  # timed per loader path
SCALE=$(python3 -c "print($SIZE / 224)")
ROOT=/tmp/ccrop_imagenet_check_${N}_${SIZE}
RUN=/tmp/ccrop_imagenet_check_run
STAGES=${STAGES:-"make loaders pretrain step decode1 step_compiled"}
(nvidia-smi -L || true; echo "cores $CORES"; python3 -c "import torch; print('torch', torch.__version__)") \
  2>&1 | tee "$OUT/log.txt"
stage() {  # name, timeout, command...
  local name=$1 limit=$2; shift 2
  case " $STAGES " in *" $name "*) ;; *) return 0 ;; esac
  local t0=$(date +%s)
  echo "== $name" | tee -a "$OUT/log.txt"
  timeout "$limit" "$@" >>"$OUT/log.txt" 2>&1
  echo "== $name: exit $? after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/log.txt"
}
collect() {
  python3 - "$OUT" "$RUN" "$N" <<'EOF'
import json, sys
from pathlib import Path
out, run, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
load = lambda p: json.loads(p.read_text()) if p.is_file() else {}
dec, step, comp = load(out / "loaders.json"), load(out / "step.json"), load(out / "step_compiled.json")
summary = load(run / "summary.json")
epochs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()
          if '"event": "epoch"' in l] if (run / "metrics.jsonl").is_file() else []
loaders = dec.get("loaders", {})
rate = lambda k: loaders[k].get("images_per_s") if isinstance(loaders.get(k), dict) else None
env = {**dec.get("environment", {}), **step.get("environment", {})}
res = {"gpu": env.get("gpu", "none (CPU run)"), "cores": env.get("cores_usable"),
       "environment": env, "images": n, "workers": loaders.get("workers"),
       "loaders_images_per_s": {k: rate(k) for k in loaders if rate(k)},
       "step_ms": {**step.get("step", {}), **comp.get("step", {})}}
if epochs:
    last = epochs[-1]  # epoch 2: workers and allocator warm
    res["pretrain"] = {"epoch_s": last["seconds"], "data_wait_s": last["data_seconds"],
                       "steps": last["steps"], "images_per_s": last["images_per_s"],
                       "data_wait_share": last["data_seconds"] / last["seconds"]}
box_s = summary.get("time", {}).get("box_update_s")
if box_s:
    res["box_update"] = {"images": n, "seconds": box_s, "images_per_s": n / box_s,
                         "estimate_1p28m_s": 1_281_167 * box_s / n}  # start-up included
    if rate("loc_draft"):  # decode alone, steady state: the optimistic bound
        res["box_update"]["estimate_1p28m_decode_bound_s"] = 1_281_167 / rate("loc_draft")
t = {}
if "pretrain" in res:
    t["data_wait_lt_5pct"] = res["pretrain"]["data_wait_share"] < 0.05
if rate("gpu_source") and rate("official"):
    res["ccrop_over_official"] = rate("gpu_source") / rate("official")
    t["ccrop_ge_2x_official"] = res["ccrop_over_official"] >= 2
if "box_update" in res:
    t["box_update_1p28m_le_120s"] = res["box_update"]["estimate_1p28m_s"] <= 120
res["targets_pass"] = t
(out / "imagenet_check.json").write_text(json.dumps(res, indent=1) + "\n")
print(json.dumps(res, indent=1))
EOF
}
stage make 60 python3 benchmarks/bench_decode.py --make "$ROOT" --n "$N" --scale "$SCALE" \
  --workers "$WORKERS"
stage loaders 90 python3 benchmarks/bench_decode.py --root "$ROOT" --one-process 0 \
  --workers "$WORKERS" --batch "$BATCH" --seconds "$PATH_SECONDS" --device "$DEVICE" \
  --view-size "$SIZE" --out "$OUT/loaders.json"
collect >/dev/null 2>&1
rm -rf "$RUN"
stage pretrain 130 python3 -m ccrop.cli pretrain --config configs/imagenet1k/mocov2_ccrop.yaml \
  data.dataset=unlabeled-folder data.root="$ROOT" data.image_size="$SIZE" \
  data.loc_image_size="$SIZE" data.batch_size="$BATCH" data.num_workers="$WORKERS" \
  data.pipeline=gpu model.width="$WIDTH" train.device="$DEVICE" train.amp=true \
  train.channels_last=true train.epochs=2 crop.warmup_epochs=1 crop.loc_interval=1 \
  crop.loc_batch_size="$BATCH" train.max_steps_per_epoch="$STEPS" train.progress=false \
  train.tensorboard=false optim.fused=true train.out_dir="$RUN"
collect >/dev/null 2>&1
STEP=/tmp/ccrop_imagenet_check_step.py  # timeout runs programs, not shell functions
cat > "$STEP" <<'EOF'
"""The bare MoCo v2 ResNet-50 step; argv: compiled (0|1), out, device, size, batch, width."""
import json, sys
import torch
from ccrop.bench import bench_step, environment
from ccrop.config import load_config
compiled, out, device, size, batch, width = sys.argv[1] == "1", *sys.argv[2:]
cfg = load_config("configs/imagenet1k/mocov2_ccrop.yaml", [
    f"data.image_size={size}", f"data.batch_size={batch}", f"model.width={width}",
    f"train.device={device}"])
dev = torch.device(device)
res = bench_step(cfg, dev, steps=10, compiled=compiled)  # fp32, bf16 + channels_last[, compiled]
res = {k: v for k, v in res.items() if compiled == ("compiled" in k)}
json.dump({"environment": environment(dev), "batch": int(batch), "step": res},
          open(out, "w"), indent=1)
print(res)
EOF
stage step 40 python3 "$STEP" 0 "$OUT/step.json" "$DEVICE" "$SIZE" "$BATCH" "$WIDTH"
collect >/dev/null 2>&1
stage decode1 25 python3 benchmarks/bench_decode.py --root "$ROOT" --one-process 200 \
  --repeats 2 --view-size "$SIZE" --out "$OUT/decode_one_process.json"
stage step_compiled 90 python3 "$STEP" 1 "$OUT/step_compiled.json" "$DEVICE" "$SIZE" "$BATCH" \
  "$WIDTH"
collect 2>&1 | tee -a "$OUT/log.txt"
