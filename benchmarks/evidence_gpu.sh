#!/usr/bin/env bash
# Prepared GPU A/B (issue: evidence). One H100/H200, under 8 minutes. Writes to $OUT:
#   concurrency.json  images/s of one training process alone vs CONC processes at once on the GPU
#   ab.md, ab.json    `ccrop ab` table: rcrop / ccrop (project defaults) / oracle (true boxes) x
#                     SEEDS seeds, paired differences with 95% t-intervals, box IoU, s/epoch
#   ab_knn.png        kNN per epoch, one band per arm
#   log.txt           everything printed, with the GPU named
# Setup: SimCLR, ResNet-18 width 64 (CIFAR stem), fashion-mnist-cluttered 32 px (N train images,
# the first N of Fashion-MNIST's test split as kNN queries), EPOCHS epochs, warm-up and box
# interval EPOCHS/5, GPU view path, bf16 + channels_last + fused SGD, batch 512.
# Usage: OUT=dir bash benchmarks/evidence_gpu.sh   (N, EPOCHS, SEEDS, CONC, ARMS, EXTRA override)
# Data: the Fashion-MNIST IDX files must be on the GPU machine: copy them here first
#   mkdir -p .data && cp -r /usr/share/datasets/fashion-mnist .data/   (git-ignored; carry .data)
# omegaconf: carry .whl as for gpu_check.sh (benchmarks/README.md).
# On a CPU, for a dry run: N=256 EPOCHS=2 SEEDS=2 CONC=2 DEVICE=cpu bash benchmarks/evidence_gpu.sh
set -u
OUT=${OUT:-benchmarks/results/evidence_gpu}
mkdir -p "$OUT"
. "$(dirname "$0")/device_env.sh"
N=${N:-10000}; EPOCHS=${EPOCHS:-60}; SEEDS=${SEEDS:-3}; CONC=${CONC:-3}; DEVICE=${DEVICE:-cuda}
ARMS=${ARMS:-rcrop,ccrop,oracle}; EXTRA=${EXTRA:-}; WORK=${WORK:-/tmp/evidence_gpu}
ROOT=""
[ -d .data/fashion-mnist ] && ROOT="data.root=$PWD/.data/fashion-mnist"
INTERVAL=$(( EPOCHS / 5 > 0 ? EPOCHS / 5 : 1 ))
AMP="train.amp=true train.channels_last=true optim.fused=true"
[ "$DEVICE" = cpu ] && AMP="data.num_workers=0"
COMMON="data.dataset=fashion-mnist-cluttered $ROOT data.dataset_kwargs.num_images=$N
 data.batch_size=$(( N < 512 ? N / 2 : 512 )) data.pipeline=gpu model.width=64
 method.name=simclr crop.warmup_epochs=$INTERVAL crop.loc_interval=$INTERVAL
 crop.loc_batch_size=1024 train.epochs=$EPOCHS train.knn_every=$INTERVAL train.device=$DEVICE
 train.progress=false train.tensorboard=false train.keep_last=1 $AMP $EXTRA"
rm -rf "$WORK"; mkdir -p "$WORK"
(nvidia-smi -L || true; python3 -c "import torch; print('torch', torch.__version__)"; date -u) \
  2>&1 | tee "$OUT/log.txt"
say() { echo "$@" | tee -a "$OUT/log.txt"; }

# 1. concurrency: a short run alone, then CONC of them at once (same work each)
probe() {  # name, count
  local t0=$(date +%s.%N)
  for i in $(seq 1 "$2"); do
    python3 -m ccrop.cli pretrain $COMMON crop.kind=rcrop train.epochs=3 train.knn_every=0 \
      train.seed=$i train.out_dir="$WORK/$1_$i" >>"$OUT/log.txt" 2>&1 &
  done
  wait
  python3 - "$WORK" "$1" "$2" "$t0" "$N" <<'EOF' >>"$WORK/probe.jsonl"
import json, sys, time
from pathlib import Path
work, name, n, t0, images = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
runs = [json.loads((Path(work) / f"{name}_{i}" / "summary.json").read_text()) for i in range(1, n + 1)]
per_run = [3 * images / r["time"]["train_s"] for r in runs]  # images/s of each process
print(json.dumps({"processes": n, "images_per_s_each": per_run, "images_per_s_total": sum(per_run),
                  "wall_s": time.time() - t0}))
EOF
  say "== probe $1 ($2 processes): $(tail -1 "$WORK/probe.jsonl")"
}
probe alone 1
probe together "$CONC"
python3 - "$WORK/probe.jsonl" "$OUT/concurrency.json" <<'EOF'
import json, sys
alone, together = [json.loads(l) for l in open(sys.argv[1])]
gain = together["images_per_s_total"] / alone["images_per_s_total"]
json.dump({"alone": alone, "together": together, "throughput_gain": gain,
           "use_concurrent": gain > 1.15}, open(sys.argv[2], "w"), indent=1)
print(f"concurrent throughput gain {gain:.2f}x")
EOF
USE=$(python3 -c "import json; print(json.load(open('$OUT/concurrency.json'))['use_concurrent'])")
[ "$USE" = True ] || CONC=1
say "== A/B: arms $ARMS, $SEEDS seeds, $CONC at once, N=$N, $EPOCHS epochs"

# 2. the A/B: one `ccrop ab` process per seed, CONC at a time; seed-paired folders
t0=$(date +%s)
for s in $(seq 0 $(( SEEDS - 1 ))); do
  python3 -m ccrop.cli ab --arms "$ARMS" --seeds "$s," --out "$WORK/ab" $COMMON \
    >>"$OUT/log.txt" 2>&1 &
  while [ "$(jobs -rp | wc -l)" -ge "$CONC" ]; do sleep 1; done
done
wait
say "== A/B done in $(( $(date +%s) - t0 )) s"
python3 - "$WORK/ab" "$OUT" "$ARMS" <<'EOF' 2>&1 | tee -a "$OUT/log.txt"
import sys
from pathlib import Path
from ccrop.ab import collect_groups, report
ab, out, arms = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
groups = collect_groups([ab / a for a in arms if (ab / a).is_dir()])
markdown, _ = report(groups, out)
print(markdown)
EOF
ls -la "$OUT" | tee -a "$OUT/log.txt"
