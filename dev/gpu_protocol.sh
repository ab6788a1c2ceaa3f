#!/usr/bin/env bash
# The two-stage protocol on one GPU (scripts/run_protocol.py), repo root on a CUDA machine set
# up as for the other dev scripts (dev/device_env.sh). Many runs share the GPU ($JOBS at once,
# each with 16 / $JOBS CPU threads). Its runs go to results/protocol_gpu/<dataset>, apart from
# the CPU protocol's (a GPU run is not the same computation, so the two are never paired); runs
# already there (carried with the tree) are skipped, so a call continues where the last stopped.
# Order: the synthetic set's headline arms at 8 pairs, then the teacher pipeline's arms, then
# Cervix93 (3-class and class-agnostic) when $DATA holds it. Stopped at $DEADLINE s from the
# start; everything finished comes back as $OUT/protocol.tar.gz.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
DATA=${DATA:-datasets/cervix93}
DEADLINE=${DEADLINE:-540}
JOBS=${JOBS:-12}
START=$(date +%s)
source dev/device_env.sh
left() { echo $((DEADLINE - ($(date +%s) - START))); }
protocol() {  # the first argument is the data set
  timeout "$(left)" python3 scripts/run_protocol.py --jobs "$JOBS" --dataset "$1" \
    --output "results/protocol_gpu/$1" "${@:2}" MODEL.DEVICE cuda
}
protocol synthetic --arms supervised null_control dualalign > "$OUT/protocol_headline.log" 2>&1
protocol synthetic --arms supervised teacher_null_control self_training dualalign_teacher \
  dualalign_all switch_teacher_source switch_pseudo_boxes switch_strong_view switch_tempered \
  switch_grad_scale csd mean_teacher dualalign_noproto dualalign_noproposal \
  > "$OUT/protocol_arms.log" 2>&1
if [ -f "$DATA/annotations_val.json" ]; then
  for d in cervix93 cervix93_agnostic; do
    protocol "$d" --data-root "$DATA" --arms supervised null_control dualalign \
      self_training dualalign_teacher > "$OUT/protocol_$d.log" 2>&1
  done
fi
ARMS="supervised null_control dualalign teacher_null_control self_training dualalign_teacher"
python3 scripts/run_protocol.py --summarize-only --output results/protocol_gpu/synthetic \
  --arms $ARMS > /dev/null 2>&1  # after a timeout
for d in cervix93 cervix93_agnostic; do
  [ -d "results/protocol_gpu/$d" ] && python3 scripts/run_protocol.py --summarize-only \
    --dataset "$d" --data-root "$DATA" --output "results/protocol_gpu/$d" --arms $ARMS \
    > /dev/null 2>&1
done
tar czf "$OUT/protocol.tar.gz" results/protocol_gpu --exclude='*.pth'
echo "done in $(($(date +%s) - START)) s"; tail -3 "$OUT"/protocol_*.log
