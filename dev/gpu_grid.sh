#!/usr/bin/env bash
# The second prepared GPU call (Tables 1/2 on Cervix93, and the speed profile), repo root on a
# CUDA machine whose python has torch/torchvision; detectron2 and the pure-Python deps come as
# wheels in .whl/ (docs/SPEED.md). Cervix93 must be at $DATA (copied with the tree):
#   1. scripts/profile_step.py: (b0), (b), (c) at 512/256/128 unlabelled proposals, fp32 and
#      AMP, and the op-level profile of (c) against (b). The GPU runs nothing else meanwhile.
#   2. GPU preset smoke: configs/paper R-101-FPN at 1200 px, 4 + 4 images, every method, a few
#      iterations on Cervix93 through scripts/run_benchmark.py.
#   3. Cervix93 grids, 3-class and class-agnostic, with the CPU preset's settings (R-18, 200
#      iterations) run on the GPU, many runs at once; stopped at $DEADLINE s from the start,
#      Table 2's 25 % runs and the supervised/ours rows first.
# Everything comes back as $OUT/gpu_grid.tar.gz plus the logs.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
DATA=${DATA:-datasets/cervix93}
DEADLINE=${DEADLINE:-500}
JOBS=${JOBS:-6}
START=$(date +%s)
source dev/device_env.sh

echo "== 1. profile ($(($(date +%s) - START)) s)"
timeout 170 python3 scripts/profile_step.py --device cuda --out /tmp/profile \
  > "$OUT/profile.log" 2>&1 || echo "profile_step.py exited with $?"
grep -v -i warn "$OUT/profile.log" | tail -12

R=/tmp/results
grid() {
  python3 scripts/run_benchmark.py --dataset cervix93 --data-root "$DATA" --preset cpu \
    --output "$R" --jobs "$JOBS" "$@" MODEL.DEVICE cuda SOLVER.CHECKPOINT_PERIOD 100000
}
chain() {
  grid "$@" --fractions 0.25 --seeds 0 1
  grid "$@" --methods supervised dualalign --fractions 0.5 0.75 1.0 --seeds 0 1
  grid "$@"
}
export R DATA JOBS
LEFT=$((DEADLINE - ($(date +%s) - START)))
echo "== 3. Cervix93 grids in the background, ${LEFT} s"
timeout "$LEFT" bash -c "$(declare -f grid chain); chain" > "$OUT/grid_3class.log" 2>&1 &
G1=$!
timeout "$LEFT" bash -c "$(declare -f grid chain); chain --class-agnostic" \
  > "$OUT/grid_agnostic.log" 2>&1 &
G2=$!

echo "== 2. GPU preset smoke ($(($(date +%s) - START)) s)"
timeout 240 python3 scripts/run_benchmark.py --dataset cervix93 --data-root "$DATA" --preset gpu \
  --iters 10 --fractions 0.25 --seeds 0 --jobs 2 --output /tmp/smoke \
  MODEL.WEIGHTS "" MODEL.RESNETS.NORM BN MODEL.BACKBONE.FREEZE_AT 0 \
  SOLVER.IMS_PER_BATCH 4 DUALALIGN.UNLABELED_IMS_PER_BATCH 4 \
  INPUT.MIN_SIZE_TRAIN "(1200,)" INPUT.MAX_SIZE_TRAIN 1600 \
  INPUT.MIN_SIZE_TEST 1200 INPUT.MAX_SIZE_TEST 1600 > "$OUT/smoke.log" 2>&1
echo "smoke exited with $?"
grep -a -E "runs|mAP|FAILED|wrote" "$OUT/smoke.log" | tail -10

wait $G1 $G2
echo "== collect ($(($(date +%s) - START)) s)"
for f in "$OUT"/grid_*.log; do tr '\r' '\n' < "$f" | grep -a -E "mAP|FAILED|runs|wrote" | tail -4; done
cd /tmp && tar czf "$OUT/gpu_grid.tar.gz" --exclude='*.pth' --exclude='events.out*' \
  --exclude='last_checkpoint' --exclude='coco_instances_results.json' \
  profile results smoke 2>/dev/null
ls -la "$OUT"
