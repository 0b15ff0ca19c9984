#!/usr/bin/env bash
# The GPU checks of rims_core, as one short script for a lent GPU machine (python3 there holds a CUDA torch):
#   bash bench/gpu_checks.sh   -> gpu tests, the speed bench with the Triton step (fp32, eager and CUDA graph),
#   then the speed bench in fp32, bf16 and bf16 + compiled step.
set -uo pipefail
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/rims_gpu}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
python3 -c "import triton; print('triton', triton.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"
python3 -m pytest -m gpu tests/rims_core -q -p no:cacheprovider 2>&1 | tail -8 | tee "$OUT/gpu_tests.txt"
# the Triton step (rims_core.triton_step), eager and under one CUDA graph, beside the plain fused scan
python3 bench/rim_speed.py --device cuda --triton --cuda-graph --repeats 20 --input-sizes 10 2>&1 \
  | tee "$OUT/bench_fp32_triton.txt"
python3 bench/rim_speed.py --device cuda --repeats 20 2>&1 | tee "$OUT/bench_fp32.txt"
python3 bench/rim_speed.py --device cuda --bf16 --repeats 20 2>&1 | tee "$OUT/bench_bf16.txt"
timeout 240 python3 bench/rim_speed.py --device cuda --bf16 --compile --repeats 20 --input-sizes 10 2>&1 \
  | tail -8 | tee "$OUT/bench_bf16_compile.txt"
