#!/usr/bin/env bash
# Prepared GPU check (issue: speed). One H100/H200, under 8 minutes. Writes JSON to $OUT.
#   1. SimCLR + ContrastiveCrop, ResNet-18 (width 64), 50k synthetic 32x32 images, 20 epochs,
#      GPU view path (bf16, channels_last, fused SGD): seconds per epoch, box updates, kNN.
#   2. `ccrop bench` of the GPU-path config: views/s (PIL vs batched CPU vs batched GPU, chunked),
#      step ms (fp32 vs bf16+channels_last), epoch split, host syncs per step, peak memory.
#   3. benchmarks/cuda_sync_check.py: views + optimizer steps of every method and localization
#      batches under torch.cuda.set_sync_debug_mode("error") (no host sync may happen).
#   4. benchmarks/compile_check.py: every loss compiled by Inductor (forward + backward) against
#      eager; then the GPU-path run again with train.compile=true (CEPOCHS epochs; compile time excluded
#      from the median by the first-epoch rule).
#   5. The 20-epoch run on the CPU view path (PIL in DataLoader workers): ratio and kNN.
#   6. benchmarks/bench_crop.py --device cuda (batched vs per-image localization on the GPU).
#   7. `ccrop bench` again with the torch.compile step variant.
# Stages run in order of importance; each has its own time limit (sum 725 s; ~7 min expected).
# Usage: OUT=some/dir bash benchmarks/gpu_check.sh   (N, EPOCHS, CEPOCHS, WORKERS, EXTRA override;
#   STAGES="train_gpu train_gpu_compiled" runs only the named stages)
# A GPU machine without omegaconf: first `pip download --no-deps omegaconf antlr4-python3-runtime==4.13.2
# -d .whl` here (git-ignored) and carry `.whl`; the script installs them to /tmp/site.
set -u
OUT=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$OUT"
. "$(dirname "$0")/device_env.sh"
N=${N:-50000}; EPOCHS=${EPOCHS:-20}; CEPOCHS=${CEPOCHS:-6}; WORKERS=${WORKERS:-14}
EXTRA=${EXTRA:-}
STAGES=${STAGES:-"train_gpu bench sync_check compile_check train_gpu_compiled train_cpu bench_crop bench_compiled"}
COMMON="data.dataset=synthetic data.dataset_kwargs.num_images=$N data.batch_size=512
 model.width=64 method.name=simclr crop.kind=ccrop crop.alpha=0.1 crop.warmup_epochs=5
 crop.loc_interval=5 crop.loc_batch_size=1024 train.epochs=$EPOCHS train.knn_every=0
 train.progress=false train.tensorboard=false train.amp=true train.channels_last=true
 optim.fused=true data.num_workers=$WORKERS $EXTRA"
(nvidia-smi -L || true; python3 -c "import torch; print('torch', torch.__version__)") \
  2>&1 | tee "$OUT/log.txt"
stage() {  # name, timeout, command...
  local name=$1 limit=$2; shift 2
  case " $STAGES " in *" $name "*) ;; *) return 0 ;; esac
  local t0=$(date +%s)
  echo "== $name" | tee -a "$OUT/log.txt"
  timeout "$limit" "$@" >>"$OUT/log.txt" 2>&1
  echo "== $name: exit $? after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/log.txt"
}
stage train_gpu 110 python3 -m ccrop.cli pretrain $COMMON data.pipeline=gpu train.out_dir=/tmp/gc_gpu
collect() { python3 benchmarks/collect_gpu_check.py /tmp/gc_gpu /tmp/gc_cpu "$OUT/gpu_check.json" \
  --compiled /tmp/gc_gpu_compiled; }
collect >/dev/null 2>&1
stage bench 75 python3 -m ccrop.cli bench $COMMON data.pipeline=gpu --steps 20 --no-compile \
  --out "$OUT/bench_gpu.json"
stage sync_check 40 python3 benchmarks/cuda_sync_check.py --out "$OUT/sync_check.json"
stage compile_check 90 python3 benchmarks/compile_check.py --out "$OUT/compile_check.json"
stage train_gpu_compiled 150 python3 -m ccrop.cli pretrain $COMMON data.pipeline=gpu \
  train.compile=true train.epochs=$CEPOCHS crop.warmup_epochs=2 crop.loc_interval=3 \
  train.out_dir=/tmp/gc_gpu_compiled
collect >/dev/null 2>&1
stage train_cpu 140 python3 -m ccrop.cli pretrain $COMMON data.pipeline=cpu train.out_dir=/tmp/gc_cpu
collect >/dev/null 2>&1
stage bench_crop 20 python3 benchmarks/bench_crop.py --device cuda --seconds 0.4 \
  --out "$OUT/bench_crop_cuda.json"
stage bench_compiled 100 python3 -m ccrop.cli bench $COMMON data.pipeline=gpu --steps 20 \
  --out "$OUT/bench_gpu_compiled.json"
collect 2>&1 | tee -a "$OUT/log.txt"
