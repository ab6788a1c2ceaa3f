#!/usr/bin/env bash
# The prepared GPU speed run: paper-setting bench in fp32 and AMP, each switch's step, then a
# 3-iteration AMP training through train_net.py. Run from the repo root on a CUDA machine whose
# python already has torch/torchvision; detectron2 and the pure-Python deps come as wheels in
# .whl/ (docs/SPEED.md). Results land in $OUT (or results/speed).
set -euo pipefail
OUT=${OUT:-results/speed}
source dev/device_env.sh
python3 scripts/bench.py --device cuda --amp --output "$OUT" 2>&1 | grep -v -i warn | tee "$OUT/bench.log"
# each teacher-pipeline switch on its own against the paper's method (target <= 1.3x)
python3 scripts/bench.py --device cuda --output "$OUT" --steps c_dualalign g_dualalign_teacher \
  h_switch_teacher_source h_switch_pseudo_boxes h_switch_strong_view h_switch_tempered \
  h_switch_grad_scale 2>&1 | grep -v -i warn | tee "$OUT/bench_switches.log"
python3 scripts/make_synthetic.py --out /tmp/syn --num-labeled 8 --num-unlabeled 8 --num-val 2 --num-test 4 > /dev/null
python3 train_net.py --config-file configs/synthetic/dualalign_R18_cpu.yaml \
  MODEL.DEVICE cuda SOLVER.AMP.ENABLED True SOLVER.MAX_ITER 3 DUALALIGN.LOG_PERIOD 1 \
  OUTPUT_DIR /tmp/amp_run DUALALIGN.PSEUDO.SCORE_THRESH 0.0 \
  DUALALIGN.DATASETS.COCO "[['s_lab','/tmp/syn/labeled.json','/tmp/syn/images'],['s_test','/tmp/syn/test.json','/tmp/syn/images']]" \
  DUALALIGN.DATASETS.UNLABELED "[['synthetic_unlabeled','/tmp/syn/unlabeled.json','/tmp/syn/images']]" \
  DATASETS.TRAIN "('s_lab',)" DATASETS.TEST "('s_test',)" > "$OUT/amp_train.log" 2>&1 \
  && echo "AMP train_net: OK" | tee -a "$OUT/gpu.txt" || { echo "AMP train_net: FAILED"; tail -30 "$OUT/amp_train.log"; }
tail -n 3 /tmp/amp_run/metrics.json > "$OUT/amp_metrics_tail.json" || true
