# Sourced by the prepared GPU scripts (run from the repo root): puts the carried wheels (.whl/:
# detectron2 and the pure-Python deps) and the package itself on PYTHONPATH (the device's python
# has no editable install; the scripts import dualalign) and records the GPU and versions in
# $OUT/gpu.txt.
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
export PYTHONUNBUFFERED=1
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
${PYTHON:-python3} -c "import torch, detectron2; print('torch', torch.__version__, 'detectron2', detectron2.__version__)" | tee -a "$OUT/gpu.txt"
