#!/usr/bin/env bash
# The GPU checks of rims_core, as one short script for a lent GPU machine (python3 there holds a CUDA torch):
#   bash bench/gpu_checks.sh   -> gpu tests, the speed bench with the Triton step (fp32, eager and CUDA graph),
#   one acting step (bench/act_speed.py; eager and replaying CUDA graphs),
#   the packed-trials throughput (bench/gpu_packing.py), then the speed bench in fp32 (with RIMCell.recompute) and
#   bf16 (fused, Triton, plain),
#   each step under its own timeout so that the whole fits one 10-minute device call (at most 570 s).
set -uo pipefail
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
# the packages the GPU image lacks (pydantic and its needs, for sweeps: bench/gpu_packing.py), carried as wheels
# in .whl/ (bench/gpu_sweep.sh; /work/.library/device/README.md says how to fetch them)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PWD"
fi
OUT="${OUT:-/tmp/rims_gpu}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
python3 -c "import triton; print('triton', triton.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"
timeout 120 python3 -m pytest -m gpu tests/rims_core -q -p no:cacheprovider 2>&1 | tail -8 | tee "$OUT/gpu_tests.txt"
# the Triton step (rims_core.triton_step), eager and under one CUDA graph, beside the plain fused scan
timeout 90 python3 bench/rim_speed.py --device cuda --triton --cuda-graph --repeats 20 --input-sizes 10 2>&1 \
  | tee "$OUT/bench_fp32_triton.txt"
# one acting step of an RL policy (T=1, eval, no grad, state carried), B = 8..64
timeout 45 python3 bench/act_speed.py --device cuda --triton --graphs --repeats 10 2>&1 | tee "$OUT/bench_act.txt"
# a sweep's throughput: copying_paper-sized trials packed 1, 4 and 8 to the GPU, RIMs (Triton step) vs LSTM-600
timeout 180 python3 bench/gpu_packing.py 2>&1 | tee "$OUT/packing.txt"
# the fused scan at input 600, and with RIMCell.recompute (saved activations 218 -> 84 MB; its time on a GPU)
timeout 45 python3 bench/rim_speed.py --device cuda --recompute --repeats 20 --input-sizes 600 2>&1 \
  | tee "$OUT/bench_fp32.txt"
# bf16 autocast: the fused scan (input maps in bf16, recurrence in fp32), its Triton step, and the plain path
timeout 90 python3 bench/rim_speed.py --device cuda --bf16 --triton --plain --repeats 20 --input-sizes 10 2>&1 \
  | tee "$OUT/bench_bf16.txt"
