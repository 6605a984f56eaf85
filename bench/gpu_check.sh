#!/usr/bin/env bash
# The CUDA throughput check in one command, on a machine with a GPU and PyTorch (nothing to
# download): writes a small demo dataset, builds it, then runs bench/bench_train.py there
# (synthetic batches already on the GPU, then train() end to end, per batch size).
#   bash bench/gpu_check.sh [extra bench_train.py arguments]
# Environment: SERIES (demo series, default 60), DEVICE (default cuda), OUT (where the
# JSON figures go, default the work folder), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the project, where it is not pip-installed
work=$(mktemp -d)
python=${PYTHON:-python3}
workers=$(nproc)
start=$(date +%s)
"$python" -m pipeline demo-data --series "${SERIES:-60}" --out "$work/demo" --workers "$workers" | tail -1
"$python" -m pipeline build --data "$work/demo" --out "$work/datasets" --workers "$workers" | tail -1
echo "demo data and datasets: $(( $(date +%s) - start )) s"
"$python" bench/bench_train.py --device "${DEVICE:-cuda}" --datasets "$work/datasets" --batch 14,64,256 \
    --json "${OUT:-$work}/bench_train_${DEVICE:-cuda}.json" "$@"
rm -rf "$work"
