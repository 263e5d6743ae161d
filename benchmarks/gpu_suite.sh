#!/usr/bin/env bash
# The GPU checks of issue 14 and the McMahan sweep, in one run of under 9 minutes on
# one H200 (or H100), writing results as it goes. Each part has its own time limit, so
# one that runs long or fails cannot take the others with it.
#
# On the GPU machine, from the repository root, with .whl/ from benchmarks/gpu_wheels.sh:
#     bash benchmarks/gpu_suite.sh          (results in $OUT, else docs/results/gpu/)
# A smoke test of the script itself on a CPU (a few steps, minutes):
#     DEVICE=cpu QUICK=1 OUT=/tmp/gpu-suite bash benchmarks/gpu_suite.sh
#
# Files written (at most 8, as the device tool brings back): gpu_suite.txt (machine,
# parts, exit codes), gpu_speed.{log,json}, gpu_sweep_iid.{log,json},
# gpu_sweep_shards.{log,json}.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-docs/results/gpu}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
SUMMARY="$OUT/gpu_suite.txt"
: >"$SUMMARY"
started=$(date +%s)
note() { echo "$*" | tee -a "$SUMMARY"; }

if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/veilfl-site .whl/*.whl >>"$SUMMARY" 2>&1 || note "wheel install failed"
fi
export PYTHONPATH="$PWD/src:/tmp/veilfl-site${PYTHONPATH:+:$PYTHONPATH}"
note "date: $(date -u +%FT%TZ)"
nvidia-smi -L >>"$SUMMARY" 2>&1 || note "nvidia-smi: not available"
"$PY" - >>"$SUMMARY" 2>&1 <<'PYEOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__,
      "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
import veilfl.sim.executor, veilfl.ml.datasets
print("mnist", len(veilfl.ml.datasets.load_mnist().test), "test images")
PYEOF

# part NAME LIMIT_SECONDS COMMAND...: run with a hard limit; log and exit code kept.
part() {
    local name=$1 limit=$2
    shift 2
    note "== $name: limit ${limit}s, at $(($(date +%s) - started))s"
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local code=$?
    tail -n 25 "$OUT/$name.log"
    note "== $name: exit $code$([ $code -eq 124 ] && echo ' (time limit)'), at $(($(date +%s) - started))s"
}

if [ -n "$QUICK" ]; then
    SPEED=(--quick --quick-batches 2 --executor-clients 4 --updates-clients 8 --clients 4)
    SWEEP=(--max-batches 2 --epochs 1 --test-examples 500 --max-rounds 2)
    SPEED_LIMIT=300 IID_LIMIT=200 IID_BUDGET=150 SHARDS_LIMIT=200 SHARDS_BUDGET=150
else
    SPEED=(--executor-clients 10 --updates-clients 100 --clients 10,100 --repeats 2 --threads 4)
    SWEEP=(--max-rounds 400)
    SPEED_LIMIT=160 IID_LIMIT=115 IID_BUDGET=95 SHARDS_LIMIT=215 SHARDS_BUDGET=190
fi

# 1. Sequential against batched on the GPU at 10 clients per round (goal: batched at
#    least 2.5x faster), and batched client updates/s at 100 per round (goal: 30/s);
#    then whole rounds of veilfl.sim.simulate (coordinator, wire codec, aggregation)
#    training batched on the GPU, against the batched executor alone, at 10 and 100
#    clients per round (the simulator's overhead on a GPU).
part gpu_speed "$SPEED_LIMIT" "$PY" benchmarks/simulation_speed.py --device "$DEVICE" \
    --parts executors,overhead --modes batched "${SPEED[@]}" --out "$OUT/gpu_speed.json"

# 2. The McMahan sweep, IID (goal: 99% within 20 rounds), then pathological non-IID
#    (goal: 99% within 206 rounds). All runs of a partition train in lockstep.
part gpu_sweep_iid "$IID_LIMIT" "$PY" benchmarks/mcmahan_sweep.py --partition iid \
    --device "$DEVICE" --time-budget "$IID_BUDGET" "${SWEEP[@]}" \
    --runs fedavg@0.05,fedavg@0.1,fedavg@0.2,fedyogi@0.1/0.01,fedyogi@0.1/0.03 \
    --out "$OUT/gpu_sweep_iid.json"
part gpu_sweep_shards "$SHARDS_LIMIT" "$PY" benchmarks/mcmahan_sweep.py --partition shards \
    --device "$DEVICE" --time-budget "$SHARDS_BUDGET" "${SWEEP[@]}" \
    --runs fedavg@0.05,fedavg@0.1,fedyogi@0.1/0.01,fedyogi@0.1/0.03 \
    --out "$OUT/gpu_sweep_shards.json"
note "total: $(($(date +%s) - started))s"
