"""What the fast scorer is measured against, on the same inputs and token budget.

* `hf_logprob_forward`: the forward a trainer (TRL) already runs: one Hugging Face forward with
  ``logits_to_keep``, log-softmax, gather. The ratios of the tables are taken against it.
* `plain_logprob_forward`: the same forward through the decoder, then the package's fused head
  (`HEAD`): response log-probs without the ``[tokens, vocab]`` logits.
* The naive row is the package's own reference path, ``RePROScorer(..., backend="naive")``
  (`presets.Preset.make_scorer`): nothing of it is restated here.
* `paper_code_cost`: what the authors' code does per rollout (SPEC §8). For context only.
* `token_count_bound`: tokens through the model, naive path over fast path, from scored points.
* Peers of the LM head (`bench_head.py`): `load_verl_linear_cross_entropy` (verl's fused kernel
  without verl's package import) and `liger_fused_linear_cross_entropy`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from repro_fast.batching import micro_batches
from repro_fast.ops import fused_logprob_entropy

HEAD = fused_logprob_entropy  # the head the fast scorer uses
HEAD_NAME = "repro_fast.ops.fused_logprob_entropy"


# --------------------------------------------------------------------------------------------
# The trainer's forward
# --------------------------------------------------------------------------------------------

def trainer_micro_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Consecutive row groups (a trainer keeps its batch order) whose padded size (rows x longest
    row) stays within the budget; a row longer than the budget goes alone."""
    groups: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i, n in enumerate(lengths):
        new_max = max(cur_max, n)
        if cur and new_max * (len(cur) + 1) > token_budget:
            groups.append(cur)
            cur, new_max = [], n
        cur.append(i)
        cur_max = new_max
    if cur:
        groups.append(cur)
    return groups


def pad_batch(rows: list[list[int]], device, pad_to: int | None = None):
    """Right-padded ``input_ids`` and ``attention_mask`` (None when no row is padded)."""
    width = max(len(r) for r in rows) if pad_to is None else pad_to
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    need_mask = any(len(r) != width for r in rows)
    return ids.to(device), (mask.to(device) if need_mask else None)


@torch.inference_mode()
def plain_logprob_forward(model, prompts, responses, *, token_budget: int, temperature: float = 1.0,
                          head: Callable | None = None):
    """Response log-probs from one forward over each ``[q, y]`` (micro-batched under the token
    budget) plus the fused head: the forward an RL trainer already pays for.

    Returns a list of fp32 tensors, ``len(y)`` values each.
    """
    head = head or HEAD
    device = next(model.parameters()).device
    decoder = model.get_decoder()
    weight = model.get_output_embeddings().weight
    rows = [list(map(int, q)) + list(map(int, y)) for q, y in zip(prompts, responses)]
    out: list[torch.Tensor | None] = [None] * len(rows)
    for group in trainer_micro_batches([len(r) for r in rows], token_budget):
        ids, mask = pad_batch([rows[i] for i in group], device)
        hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        pieces, targets = [], []
        for j, i in enumerate(group):
            nq, n = len(prompts[i]), len(responses[i])
            if n == 0:
                continue
            pieces.append(hidden[j, nq - 1: nq - 1 + n])
            targets.append(ids[j, nq: nq + n])
        if not pieces:
            for i in group:
                out[i] = torch.empty(0, dtype=torch.float32, device=device)
            continue
        logprobs, _entropy = head(torch.cat(pieces), weight, torch.cat(targets), temperature)
        offset = 0
        for i in group:
            n = len(responses[i])
            out[i] = logprobs[offset: offset + n]
            offset += n
        del hidden
    return out


@torch.inference_mode()
def hf_logprob_forward(model, prompts, responses, *, token_budget: int, temperature: float = 1.0):
    """What a trainer (TRL) already runs: prompts left-padded, completions right-padded, one
    Hugging Face forward keeping only the completion logits (``logits_to_keep``), then
    log-softmax and gather. Returns one fp32 tensor per trajectory."""
    device = next(model.parameters()).device
    out: list[torch.Tensor | None] = [None] * len(prompts)
    lengths = [len(q) + len(y) for q, y in zip(prompts, responses)]
    for group in trainer_micro_batches(lengths, token_budget):
        lq = max(len(prompts[i]) for i in group)
        lc = max(len(responses[i]) for i in group)
        ids = torch.zeros(len(group), lq + lc, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, i in enumerate(group):
            q, y = list(map(int, prompts[i])), list(map(int, responses[i]))
            ids[j, lq - len(q): lq + len(y)] = torch.tensor(q + y, dtype=torch.long)
            mask[j, lq - len(q): lq + len(y)] = 1
        ids, mask = ids.to(device), mask.to(device)
        if lc == 0:
            for i in group:
                out[i] = torch.empty(0, device=device)
            continue
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=lc + 1, use_cache=False).logits
        logits = logits[:, :-1]
        logp = torch.log_softmax(logits.float() / temperature, dim=-1).gather(2, ids[:, lq:, None])[..., 0]
        for j, i in enumerate(group):
            out[i] = logp[j, : len(responses[i])]
        del logits, logp
    return out


# --------------------------------------------------------------------------------------------
# The authors' code, and the token-count bound
# --------------------------------------------------------------------------------------------

def default_points(n: int, k: int) -> list[int]:
    """``{0} ∪ k evenly spaced interior points ∪ {n}``: a stand-in plan (no scorer needed)."""
    inner = {round(n * (j + 1) / (k + 1)) for j in range(k)} if n > 1 else set()
    return sorted({0, n} | {p for p in inner if 0 < p < n})


@torch.inference_mode()
def paper_code_cost(model, prompts, responses, answer_ids, *, num_segments: int, token_budget: int,
                    temperature: float = 1.0, points=None, pad_to_full: bool = False):
    """The authors' code's extra cost (SPEC §8): per rollout, one full forward per scored
    prefix ``[q, y[:P_j], a]`` (``k + 2`` rows: ``P = {0} ∪ k points ∪ {n}``), with no KV reuse;
    each row materializes the fp32 logits of its whole sequence and log-softmaxes the whole
    response region (prefix + answer), then keeps the answer positions. Returns J (mean
    answer log-prob) per row, rollout-major.

    Rows are micro-batched under the token budget, longest first (the package's
    `micro_batches`), padded to the longest row of their micro-batch (`pad_to_full=True`: to
    ``|q| + n + |a|``, as fixed-shape batches without padding removal would). `points` (per
    trajectory) may come from a scorer result; default: evenly spaced.
    """
    device = next(model.parameters()).device
    rows, widths, meta = [], [], []
    for b, (q, y, a) in enumerate(zip(prompts, responses, answer_ids)):
        q, y, a = list(map(int, q)), list(map(int, y)), list(map(int, a))
        pts = list(points[b]) if points is not None else default_points(len(y), num_segments)
        for p in pts:
            rows.append(q + y[:p] + a)
            widths.append(len(q) + len(y) + len(a) if pad_to_full else len(q) + p + len(a))
            meta.append((len(q), p, len(a)))
    results: list[torch.Tensor | None] = [None] * len(rows)
    for group in micro_batches(widths, token_budget):
        width = max(widths[i] for i in group)
        ids, mask = pad_batch([rows[i] for i in group], device, pad_to=width)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
        for j, i in enumerate(group):
            nq, p, na = meta[i]
            end = nq + p + na
            resp_logits = logits[j, nq - 1: end - 1] / temperature
            logp = torch.log_softmax(resp_logits, dim=-1)
            tok_logp = logp.gather(1, ids[j, nq:end, None]).squeeze(1)
            results[i] = tok_logp[p: p + na].mean()
            del resp_logits, logp
        del logits
    return torch.stack(results) if results else torch.empty(0)


def token_count_bound(prompts, responses, answer_ids, points) -> dict:
    """Tokens through the model: naive path vs fast path, from the scored points.

    naive = Σ_b [(|q|+n) + Σ_{j=0..m} (|q| + P_j + |a|)]
    fast  = Σ_b [(|q|+n) + (m+1)(|a| - 1)]
    """
    naive = fast = 0
    for q, y, a, pts in zip(prompts, responses, answer_ids, points):
        nq, n, na = len(q), len(y), len(a)
        pts = [int(p) for p in pts]
        naive += (nq + n) + sum(nq + p + na for p in pts)
        fast += (nq + n) + len(pts) * (na - 1)
    return {"naive_tokens": naive, "fast_tokens": fast,
            "ratio": naive / fast if fast else float("nan")}


def result_points(result) -> list[list[int]]:
    """`points[b]` of a `RePROResult` as plain int lists."""
    return [[int(p) for p in (pts.tolist() if hasattr(pts, "tolist") else pts)]
            for pts in result.points]


# --------------------------------------------------------------------------------------------
# Peers of the LM head (imported only when present; bench_head.py reports "not installed")
# --------------------------------------------------------------------------------------------

def load_verl_linear_cross_entropy():
    """verl.utils.kernel.linear_cross_entropy without verl's package __init__.

    `import verl` runs verl/__init__.py and verl/utils/__init__.py (DataProto, tensordict, ray,
    omegaconf, ...), none of which the kernel needs: kernels.py imports torch, triton and four
    helpers of verl.utils.device. So register `verl`, `verl.utils`, `verl.utils.kernel` as bare
    packages pointing at the installed folders and `verl.utils.device` as a small CUDA stub,
    then import the two kernel modules from the installed files."""
    name = "verl.utils.kernel.linear_cross_entropy"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("verl is not installed")
    root = Path(list(spec.submodule_search_locations)[0])
    if not (root / "utils" / "kernel" / "linear_cross_entropy.py").exists():
        raise ImportError(f"verl at {root} has no utils/kernel/linear_cross_entropy.py")
    for pkg, path in (("verl", root), ("verl.utils", root / "utils"),
                      ("verl.utils.kernel", root / "utils" / "kernel")):
        if pkg not in sys.modules:
            mod = types.ModuleType(pkg)
            mod.__path__ = [str(path)]
            mod.__file__ = str(path / "__init__.py")
            sys.modules[pkg] = mod
    if "verl.utils.device" not in sys.modules:
        dev = types.ModuleType("verl.utils.device")
        dev.is_cuda_available = torch.cuda.is_available()
        dev.is_npu_available = False
        dev.get_device_name = lambda: "cuda" if torch.cuda.is_available() else "cpu"
        dev.get_torch_device = lambda: torch.cuda
        dev.get_device_capability = lambda device_id=0: (
            torch.cuda.get_device_capability(device_id) if torch.cuda.is_available() else (None, None))
        sys.modules["verl.utils.device"] = dev
    return importlib.import_module(name)


def liger_fused_linear_cross_entropy():
    """Liger's `LigerFusedLinearCrossEntropyFunction` (ImportError when not installed)."""
    from liger_kernel.ops.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyFunction

    return LigerFusedLinearCrossEntropyFunction
