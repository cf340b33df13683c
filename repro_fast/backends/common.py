"""What both backends share: the model split into decoder + LM head, and batching helpers.

Every backend runs the model's *decoder* (the stack that ends with the final norm) and applies
the LM head only to the rows it needs: this is what lets the naive backend compute ``J`` without
full-vocabulary logits at every position, and the fast backend feed the fused head kernel.
The split is checked once against the model's own forward (`ModelAdapter.verify`), so a model
whose head does something we do not reproduce fails loudly instead of scoring silently wrong.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch

from repro_fast import ops


@dataclass
class Item:
    """One validated trajectory as the backends see it."""

    prompt: np.ndarray  # int64 [|q|], |q| >= 1
    response: np.ndarray  # int64 [n]
    answer: np.ndarray  # int64 [|a|], |a| >= 1


@dataclass
class TokenStats:
    """Per-response-token statistics from the pass over ``[q, y]``."""

    logprobs: torch.Tensor  # fp32 [n]
    entropies: torch.Tensor  # fp32 [n]


class ModelAdapter:
    """A Hugging Face causal LM seen as ``decoder(ids) -> hidden`` and ``head(hidden) -> stats``."""

    def __init__(self, model, temperature: float):
        self.model = model
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        self.temperature = temperature
        cfg = getattr(model, "config", None)
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        self.softcap = getattr(text_cfg, "final_logit_softcapping", None)
        self.logit_scale = getattr(text_cfg, "logit_scale", None)
        # The fused op covers a bias-free linear head without logit post-processing.
        self.fused_head = (
            isinstance(self.head, torch.nn.Linear)
            and self.head.bias is None
            and self.softcap is None
            and self.logit_scale is None
        )
        self._verified = False
        # transformers >= 5.2x names the KV cache argument `cache`; earlier releases
        # (the GPU machine's 5.17 included) call it `past_key_values`.
        params = inspect.signature(self.decoder.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @property
    def max_positions(self) -> int | None:
        """Rows of a learned position-embedding table (GPT-2's ``wpe``), which no input may
        outgrow; None for rotary models, whose positions are computed, not looked up."""
        if not hasattr(self, "_max_positions"):
            self._max_positions = None
            for name, module in self.decoder.named_modules():
                leaf = name.rsplit(".", 1)[-1]
                if isinstance(module, torch.nn.Embedding) and (leaf == "wpe" or "position" in leaf):
                    self._max_positions = module.num_embeddings
                    break
        return self._max_positions

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Full logits of some rows, exactly as the model's forward computes them."""
        logits = self.head(hidden)
        if self.logit_scale is not None:
            logits = logits * self.logit_scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def head_stats(self, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 ``(log p(target), entropy)`` at temperature tau for rows of ``hidden [R, H]``."""
        if self.fused_head:
            return ops.fused_logprob_entropy(hidden, self.head.weight, targets, self.temperature)
        # General heads (bias, soft-capping, logit scale): chunked torch over the real head.
        lp = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        ent = torch.empty_like(lp)
        vocab = self.head.weight.shape[0]
        step = max(1, (1 << 24) // max(vocab, 1))
        for s in range(0, hidden.shape[0], step):
            z = self.logits(hidden[s : s + step]).float() / self.temperature
            logp = torch.log_softmax(z, dim=-1)
            lp[s : s + step] = logp.gather(1, targets[s : s + step, None].long())[:, 0]
            ent[s : s + step] = -(logp.exp() * logp).sum(-1)
        return lp, ent

    def hidden(self, input_ids, attention_mask, position_ids, cache=None, use_cache=False, **kwargs):
        """Final hidden states ``[B, L, H]`` and the KV cache (when ``use_cache``); extra keyword
        arguments travel down to the attention functions."""
        if cache is not None:
            kwargs[self._cache_arg] = cache
        out = self.decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        cache_out = getattr(out, "cache", None)
        if cache_out is None:
            cache_out = getattr(out, "past_key_values", None)
        return out.last_hidden_state, cache_out

    def verify(self, sample_ids: list[int]) -> None:
        """Check once that decoder + head reproduce the model's own logits."""
        if self._verified:
            return
        ids = torch.tensor([sample_ids], device=self.device)
        full = self.model(input_ids=ids, use_cache=False).logits[0].float()
        pos = torch.arange(ids.shape[1], device=self.device)[None]
        hidden, _ = self.hidden(ids, torch.ones_like(ids), pos)
        ours = self.logits(hidden[0]).float()
        if not torch.isfinite(full).all():
            raise ValueError(
                "model: produced NaN or inf logits on the first prompt's tokens; "
                "check the model's weights and dtype"
            )
        scale = full.abs().max().clamp_min(1.0)
        if not torch.allclose(ours, full, atol=1e-3 * float(scale), rtol=1e-3):
            raise TypeError(
                f"model: {type(self.model).__name__}'s forward does not equal its decoder "
                "(get_decoder()) followed by its output embeddings (get_output_embeddings()); "
                "repro_fast cannot split this model into decoder + LM head"
            )
        self._verified = True


def micro_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Group sequence indices into micro-batches whose padded size ``B * max_len`` stays within
    ``token_budget`` (a longer sequence gets a batch of its own). Sorting by length first keeps
    padding small."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1) * longest > token_budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def right_padded(seqs: list[np.ndarray], device, pad_id: int = 0):
    """``input_ids``, 2-D ``attention_mask`` and ``position_ids`` of right-padded sequences."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = s
        mask[r, : len(s)] = 1
    input_ids = torch.from_numpy(ids).to(device)
    attention_mask = torch.from_numpy(mask).to(device)
    position_ids = torch.arange(width, device=device)[None].expand(len(seqs), width)
    return input_ids, attention_mask, position_ids
