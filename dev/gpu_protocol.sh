#!/usr/bin/env bash
# The two-stage protocol on one GPU (scripts/run_protocol.py), repo root on a CUDA machine set
# up as for the other dev scripts (dev/device_env.sh). The data sets in $SETS run side by side,
# $JOBS runs at once in all (each with 16 / its set's share CPU threads). Runs go to
# results/protocol_gpu/<dataset>, apart from the CPU protocol's (a GPU run is not the same
# computation, so the two are never paired); runs already there (carried with the tree) are
# skipped, so a call continues where the last stopped. The synthetic set is generated there
# ($GEN_JOBS processes; the same files as anywhere); Cervix93 must be at $DATA (carried).
# Gates are checked and recorded but do not stop stage B (--ignore-gates): a device call is
# too short to wait for them. Stopped at $DEADLINE s from the start; everything finished comes
# back as $OUT/protocol.tar.gz (no checkpoints) with a log per data set.
# Measured on one H200 (2026-12-04, docs/SPEED.md): five runs side by side made about 44 iterations
# per second in all (GPU 99 % busy); five 3600-iteration burn-ins did not end within 495 s.
# Stage A drops the lr at 70 % and 80 % (the protocol's default since 2026-12-05; the 2026-12-04
# call above ran one drop: add EXTRA="--burn-in-steps 0.7" to extend its records).
#   OUT=/tmp/out SETS="cervix93 cervix93_agnostic" bash dev/gpu_protocol.sh
# Local dry run of the plumbing: DEVICE=cpu PYTHON=.venv/bin/python EXTRA="--burn-in-iters 4
#   --gate-burn-in-iters 4 --continue-iters 10" ...
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
DATA=${DATA:-datasets/cervix93}
DEADLINE=${DEADLINE:-500}
JOBS=${JOBS:-12}
GEN_JOBS=${GEN_JOBS:-16}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
SETS=${SETS:-synthetic cervix93 cervix93_agnostic}
SPLITS=${SPLITS:-0 1}
ORDERS=${ORDERS:-0 1 2 3}
ARMS=${ARMS:-supervised self_training_tuned dualalign_all_tuned teacher_null_control \
null_control dualalign}  # the order a pair's runs are queued in
EXTRA=${EXTRA:-}
START=$(date +%s)
source dev/device_env.sh
left() { echo $((DEADLINE - ($(date +%s) - START))); }
read -r -a sets <<< "$SETS"
per_set=$(( JOBS / ${#sets[@]} > 0 ? JOBS / ${#sets[@]} : 1 ))
if [[ " $SETS " == *" synthetic "* ]]; then
  # the sizes of dualalign/benchmark/protocol.py PROTOCOL_SIZES (the protocol checks them)
  $PYTHON scripts/make_synthetic.py --out datasets/synthetic_protocol --num-labeled 120 \
    --num-unlabeled 960 --num-val 300 --num-test 500 --jobs "$GEN_JOBS" > "$OUT/generate.log" 2>&1
  echo "synthetic set ready at $(($(date +%s) - START)) s"
fi
args() {  # the data set's run_protocol.py arguments before the opts
  echo --dataset "$1" --output "results/protocol_gpu/$1" --split-seeds $SPLITS \
    --order-seeds $ORDERS --arms $ARMS $EXTRA
  [ "$1" != synthetic ] && echo --data-root "$DATA"
}
for d in "${sets[@]}"; do
  timeout "$(left)" $PYTHON scripts/run_protocol.py --jobs "$per_set" --ignore-gates \
    $(args "$d") MODEL.DEVICE "$DEVICE" > "$OUT/protocol_$d.log" 2>&1 &
done
wait
echo "stage A/B stopped or ended at $(($(date +%s) - START)) s"
for d in "${sets[@]}"; do  # after a timeout: the runs finished so far
  $PYTHON scripts/run_protocol.py --summarize-only $(args "$d") > "$OUT/summary_$d.log" 2>&1
done
tar czf "$OUT/protocol.tar.gz" --exclude='*.pth' results/protocol_gpu
echo "done in $(($(date +%s) - START)) s"
tail -n 3 "$OUT"/protocol_*.log
