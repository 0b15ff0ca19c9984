#!/usr/bin/env bash
# A grid spec on a lent GPU without Ray or MLflow there: the local runner, offline, 6 trials at once; the
# spill files (without checkpoints) come back packed as $OUT/<name>_spill.tar.gz. Back here:
#   tar xzf <name>_spill.tar.gz -C DIR && rims tracking replay DIR/spill --mlflow-uri URI
# Needs the pydantic wheels for the machine's Python in .whl/ (docs/results.md says how).
#   bash bench/gpu_sweep.sh sweeps/specs/copying_table1_gpu.yaml
set -uo pipefail
SPEC="$1"; NAME="$(basename "$SPEC" .yaml)"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/rims_gpu}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
python3 -m rims_cli sweep local "$SPEC" --out "/tmp/$NAME" --jobs 6 --device cuda 2>&1 \
  | grep -v "^tracking: offline" | tee "$OUT/$NAME.log"
(cd "/tmp/$NAME" && tar czf "$OUT/${NAME}_spill.tar.gz" --exclude='*.pt' spill trials sweep.json)
ls -la "$OUT"
