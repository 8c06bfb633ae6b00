#!/usr/bin/env bash
# Train the CT model with the GPU preset on a machine held for a fixed time (a lent GPU), then export its weights.
#
#   BUDGET=420 OUT=runs/gpu_export bash benchmarks/train_ct_gpu.sh
#
# 1. wheels in .whl/ (monai, nibabel, pytorch-ignite, fire, termcolor), if any, are installed into /tmp/site (a
#    machine that cannot reach a package registry);
# 2. python -m benchmarks.benchmark_training_step times one training iteration there and plans the pairs and epochs
#    that fit in BUDGET seconds (the first epoch generates the pairs in the DataLoader workers);
# 3. the bundle's own training command with the GPU preset, under `timeout` (each epoch's checkpoint is kept);
# 4. the network's weights of the best (model.pt) and the last checkpoint, and the TensorBoard log, into OUT.
# The loader of configs/ct.json is swapped for MONAI's LoadImaged: generated pairs skip it, and it needs no itk.
set -u -o pipefail
BUDGET=${BUDGET:-420}
OUT=${OUT:-runs/gpu_export}
WORKERS=${WORKERS:-14}
PY=${PY:-python3}
RUN=${RUN:-runs/ct_generated_gpu}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
nvidia-smi -L 2>/dev/null
CONFIGS="['configs/train.json','configs/ct.json','configs/ct_generated.json','configs/ct_generated_gpu.json']"
$PY -m benchmarks.benchmark_training_step --override '{"preprocessing#transforms#0#_target_": "LoadImaged"}' \
    --budget-seconds "$BUDGET" --workers "$WORKERS" --iterations "${ITERATIONS:-20}" --warmup "${WARMUP:-5}" 2>&1 | tee "$OUT/plan.log" | grep -v Warp
read -r _ PAIRS EPOCHS < <(grep '^PLAN' "$OUT/plan.log") || { echo "error: no plan (see $OUT/plan.log)"; exit 1; }
if [ -n "${MAX_PAIRS:-}" ] && [ "$PAIRS" -gt "$MAX_PAIRS" ]; then PAIRS=$MAX_PAIRS; fi
echo "training: $PAIRS pairs, $EPOCHS epochs, $WORKERS workers"
start=$(date +%s)
timeout $(( BUDGET + 60 )) $PY -m monai.bundle run training --config_file "$CONFIGS" \
    --preprocessing#transforms#0#_target_ LoadImaged --num_workers "$WORKERS" \
    --num_train_pairs "$PAIRS" --epochs "$EPOCHS" --val_interval "$EPOCHS" --output_dir "$RUN" > "$OUT/train.log" 2>&1
echo "training rc=$? after $(( $(date +%s) - start )) s"
grep -E "Epoch\[[0-9]+\] Metrics|Key metric|best|rror" "$OUT/train.log" | tail -40
$PY - "$RUN" "$OUT" <<'PY'
import glob, os, shutil, sys, torch
from scripts.io.checkpoints import latest_checkpoint
run, out = sys.argv[1:]
for path in glob.glob(os.path.join(run, "events.out.tfevents.*")):
    shutil.copy(path, out)
last = latest_checkpoint(run)  # the highest epoch's last_checkpoint_epoch=N.pt, as --resume finds it
if last is not None:
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    torch.save(ckpt["model"], os.path.join(out, "model_last.pt"))
    print("exported", last)
if os.path.exists(os.path.join(run, "model.pt")):
    shutil.copy(os.path.join(run, "model.pt"), os.path.join(out, "model_best.pt"))
    print("exported", os.path.join(run, "model.pt"))
PY
ls -la "$OUT"
