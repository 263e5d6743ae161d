#!/usr/bin/env bash
# The pathological non-IID McMahan runs alone on the GPU machine, for as many rounds as
# the paper's goal (206) allows in about 6 minutes: the two best runs of gpu_suite.sh.
#     bash benchmarks/gpu_shards.sh          (results in $OUT, else docs/results/gpu/)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-docs/results/gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/veilfl-site .whl/*.whl >/dev/null 2>&1 || echo "wheel install failed"
fi
export PYTHONPATH="$PWD/src:/tmp/veilfl-site${PYTHONPATH:+:$PYTHONPATH}"
timeout --kill-after=10 "${LIMIT:-390}" "$PY" benchmarks/mcmahan_sweep.py --partition shards \
    --device "${DEVICE:-cuda}" --time-budget "${BUDGET:-370}" --max-rounds 206 \
    --runs fedyogi@0.1/0.01,fedavg@0.1 --out "$OUT/gpu_shards_206.json" \
    >"$OUT/gpu_shards_206.log" 2>&1
echo "exit $?"
tail -n 12 "$OUT/gpu_shards_206.log"
