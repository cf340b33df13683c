#!/usr/bin/env bash
# One-shot GPU check: environment, the CUDA tests of the whole repo, then the benchmarks.
#   bash benchmarks/gpu_check.sh OUTDIR
# Installs nothing: run `pip install --no-deps --no-build-isolation -e .` first.
# Budget: under 8 minutes on one H100; every step has its own timeout so a hang cannot eat it.
# Logs: OUTDIR/env.log, OUTDIR/pytest_cuda.log, OUTDIR/bench_head.log (+ head.md),
#       OUTDIR/bench_attention.log (+ attention.md),
#       OUTDIR/bench_table.log (+ score.md) when benchmarks/bench_table.py exists.
set -u -o pipefail

OUTDIR=${1:?usage: gpu_check.sh OUTDIR}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
# Seconds per step (override from the environment if the budget changes).
# The sum stays under 8 minutes with room for the install (C++ build) before it.
T_TESTS=${T_TESTS:-100}
T_HEAD=${T_HEAD:-130}
T_ATTN=${T_ATTN:-50}
T_TABLE=${T_TABLE:-200}
unset TRITON_INTERPRET  # compiled kernels on the GPU, never the interpreter
status=0

step() {  # step NAME TIMEOUT LOG CMD...: run with a timeout, tee to LOG, remember failures
  local name=$1 limit=$2 log=$3
  shift 3
  echo "=== $name (timeout ${limit}s) ==="
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: rc=$rc in $((SECONDS - t0))s ===" | tee -a "$log"
  [ "$rc" -eq 0 ] || status=1
}

{
  nvidia-smi || echo "nvidia-smi not available"
  $PY - <<'PYEOF'
import platform, torch, triton, transformers
print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("triton", triton.__version__)
print("transformers", transformers.__version__)
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0))
PYEOF
} 2>&1 | tee "$OUTDIR/env.log"

step "pytest -m cuda" "$T_TESTS" "$OUTDIR/pytest_cuda.log" \
  $PY -m pytest -m cuda tests/ -q -p no:cacheprovider --durations=10 --continue-on-collection-errors

step "bench_head" "$T_HEAD" "$OUTDIR/bench_head.log" \
  $PY benchmarks/bench_head.py "$OUTDIR/head.md"

step "bench_attention" "$T_ATTN" "$OUTDIR/bench_attention.log" \
  $PY benchmarks/bench_attention.py "$OUTDIR/attention.md"

# The scorer end to end (fast vs naive vs a plain log-prob forward).
if [ -f benchmarks/bench_table.py ]; then
  step "bench_table" "$T_TABLE" "$OUTDIR/bench_table.log" \
    $PY benchmarks/bench_table.py --preset gpu --out "$OUTDIR/score.md"
fi

echo
echo "################ tables ################"
for f in "$OUTDIR/head.md" "$OUTDIR/attention.md" "$OUTDIR/score.md"; do
  [ -f "$f" ] && { echo "--- $f"; cat "$f"; }
done
tail -n 3 "$OUTDIR/pytest_cuda.log"
echo "gpu_check: overall status $status (logs in $OUTDIR)"
exit $status
