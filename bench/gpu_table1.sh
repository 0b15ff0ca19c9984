#!/usr/bin/env bash
# Table 1 (copying) LSTM baselines at the paper's budget on a lent GPU (no Ray, no MLflow there): runs
# sweeps/specs/copying_table1_gpu.yaml with the local runner, offline, and packs the spill files (without the
# checkpoints) into $OUT/table1_spill.tar.gz. Back here: tar xzf it, then
#   rims tracking replay <folder>/spill --mlflow-uri URI
# Needs the pydantic wheels for the machine's Python in .whl/ (see docs/results.md).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/rims_gpu}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
python3 -m sweeps.cli sweep local sweeps/specs/copying_table1_gpu.yaml --out /tmp/table1 --jobs 6 --device cuda \
  2>&1 | grep -v "^tracking: offline" | tee "$OUT/table1.log"
(cd /tmp/table1 && tar czf "$OUT/table1_spill.tar.gz" --exclude='*.pt' spill trials sweep.json)
ls -la "$OUT"
