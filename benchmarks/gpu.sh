#!/usr/bin/env bash
# The benchmarks on a GPU, as one prepared command (about 5-10 minutes on one H100/H200-class GPU):
#   bash benchmarks/gpu.sh            # writes runs/bench/*_cuda.json and prints each table
# Needs the project installed with a CUDA torch (pip install -e . after installing torch for your CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
export HF_HUB_OFFLINE=1
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
$PY benchmarks/generate_throughput.py --device cuda --images 512 --questions 2048 --batch-sizes 1 8 32 128 \
    --out runs/bench/generate_throughput_cuda.json
$PY benchmarks/stage_throughput.py --device cuda --images 512 --out runs/bench/stage_throughput_cuda.json
$PY benchmarks/level_throughput.py --device cuda --steps 200 --out runs/bench/level_throughput_cuda.json
