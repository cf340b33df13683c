"""`RePROScorer` and `RePROResult`: the public entry point (SPEC §7).

One `score()` call, top to bottom: validate -> plan (host, SPEC §1, §3) -> per micro-batch:
phase 1 (token statistics), select (SPEC §4, one tensor op), ``J`` at every point -> one host
copy -> rewards (SPEC §5-6, shared by both backends) -> `RePROResult`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from repro_fast import rewards as R
from repro_fast.backends.common import Item, ModelAdapter, scoring_mode
from repro_fast.config import RePROConfig
from repro_fast.dispatch import resolve_kernels, resolve_planner
from repro_fast.segments import Planner

BACKENDS = ("auto", "naive", "fast")


@dataclass
class RePROResult:
    """RePro scores of a batch of N trajectories.

    Per trajectory ``b`` (lists of length N, CPU tensors):
        points[b]: the scored prefix lengths ``P_0 = 0 < P_1 < ... < P_m``.
        nll[b]: float32 ``[m + 1]``, ``NLL(P_j)``; ``nll[b][0]`` is the baseline ``NLL_0``.
        s_magn[b], s_stab[b], score[b], rewards[b]: float32 ``[m]`` (SPEC §5).
        think_end[b]: ``F``, the prefix length at which the think-end marker is complete
            (``n`` when there is none).
    Padded ``[N, width]`` tensors on the model's device (0 / False on padding; ``width`` =
    ``n_max`` unless asked for more):
        token_rewards: float32, raw reward ``r_j`` on response token ``P_j - 1``.
        process_advantages: float32, reward-to-go of the normalized rewards (SPEC §6).
        token_logprobs: float32, ``log p(y_t)`` at temperature tau.
        token_entropies: float32, ``H_t`` at temperature tau.
        reward_mask: bool, True exactly on the tokens that carry a reward.
        response_mask: bool, True on the ``n_b`` real response tokens.
    """

    points: list[list[int]]
    nll: list[torch.Tensor]
    s_magn: list[torch.Tensor]
    s_stab: list[torch.Tensor]
    score: list[torch.Tensor]
    rewards: list[torch.Tensor]
    think_end: list[int]
    token_rewards: torch.Tensor
    process_advantages: torch.Tensor
    token_logprobs: torch.Tensor
    token_entropies: torch.Tensor
    reward_mask: torch.Tensor
    response_mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.points)


class RePROScorer:
    """Scores chains of thought with RePro (SPEC §1-6).

    Args:
        model: a Hugging Face causal LM (``...ForCausalLM``).
        tokenizer: its tokenizer (``len(tokenizer)`` must not exceed the model's embedding rows).
        config: a `RePROConfig` (default: the paper's settings). Assign ``scorer.config`` to
            change settings later; every derived table follows.
        backend: ``"naive"`` (one forward per scored prefix: the reference and the baseline),
            ``"fast"`` (one pass over each CoT with its KV cache reused by every answer copy),
            or ``"auto"`` (= ``"fast"``).
        kernels: ``"auto"`` (Triton on CUDA, torch on CPU), ``"triton"`` or ``"torch"``;
            None reads ``REPRO_FAST_KERNELS``. Resolved here, once (`repro_fast.dispatch`).
        planner: ``"auto"`` (C++ when built), ``"cpp"`` or ``"python"``; None reads
            ``REPRO_FAST_PLANNER``.
    """

    def __init__(self, model, tokenizer, config: RePROConfig | None = None, backend: str = "auto",
                 kernels: str | None = None, planner: str | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        if not isinstance(model, torch.nn.Module) or not callable(
            getattr(model, "get_output_embeddings", None)
        ) or model.get_output_embeddings() is None:
            raise TypeError(
                f"model: expected a Hugging Face causal LM with an LM head "
                f"(e.g. AutoModelForCausalLM), got {type(model).__name__}"
            )
        if not callable(getattr(tokenizer, "decode", None)) or not callable(getattr(tokenizer, "encode", None)):
            raise TypeError(f"tokenizer: expected a Hugging Face tokenizer, got {type(tokenizer).__name__}")
        self.model = model
        self.tokenizer = tokenizer
        self.backend_name = "fast" if backend == "auto" else backend
        self.kernels = resolve_kernels(kernels, model.get_output_embeddings().weight.device)
        self.use_cpp_planner = resolve_planner(planner) == "cpp"
        self.adapter = ModelAdapter(model, 1.0, self.kernels)
        if self.backend_name == "naive":
            from repro_fast.backends.naive import NaiveBackend

            self.backend = NaiveBackend(self.adapter, 0)
        else:
            from repro_fast.backends.fast import FastBackend

            self.backend = FastBackend(self.adapter, 0, self.kernels)
        self.config = RePROConfig() if config is None else config
        self._vocab_rows()

    @property
    def config(self) -> RePROConfig:
        return self._config

    @config.setter
    def config(self, config: RePROConfig) -> None:
        if not isinstance(config, RePROConfig):
            raise TypeError(f"config: expected a RePROConfig or None, got {type(config).__name__}")
        self._config = config
        self.adapter.temperature = config.temperature
        self.backend.token_budget = config.token_budget
        self._planner: Planner | None = None
        self._answer_cache: dict[str, np.ndarray] = {}

    # ---- validation -------------------------------------------------------------------------
    def _vocab_rows(self) -> int:
        """Valid ids: ``[0, embedding rows)``; a policy may sample ids past ``len(tokenizer)``
        when its embedding is padded (Qwen), so those are scored (their text is empty)."""
        rows = self.model.get_input_embeddings().num_embeddings
        if len(self.tokenizer) > rows:
            raise ValueError(
                f"tokenizer: its vocabulary has {len(self.tokenizer)} tokens but the model's embedding "
                f"has {rows} rows; use the tokenizer the model was trained with"
            )
        return rows

    def _token_ids(self, value, name: str, rows: int, allow_empty: bool) -> np.ndarray:
        if isinstance(value, torch.Tensor):
            if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
                raise TypeError(f"{name}: expected integer token ids, got a {value.dtype} tensor")
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            if value.ndim != 1 or value.dtype.kind not in "iu":
                raise TypeError(f"{name}: expected a 1-D integer array, got {value.dtype} shape {value.shape}")
            bad = np.flatnonzero((value < 0) | (value >= rows)) if value.size else []
        elif isinstance(value, (list, tuple)):
            bad = []
            for t, v in enumerate(value):
                if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                    raise TypeError(f"{name}: expected integer token ids, got {type(v).__name__} {v!r} at position {t}")
                if not 0 <= v < rows:
                    bad = [t]
                    break
        else:
            raise TypeError(f"{name}: expected a list of token ids or a 1-D integer tensor, got {type(value).__name__}")
        if len(bad):
            t = int(bad[0])
            raise ValueError(f"{name}: token id {int(value[t])} at position {t} is outside the model's vocabulary [0, {rows})")
        if not allow_empty and len(value) == 0:
            raise ValueError(f"{name}: is empty; a prompt needs at least one token")
        return np.asarray(value, dtype=np.int64).reshape(-1)

    def answer_ids(self, answer: str, b: int | None = None) -> np.ndarray:
        """Token ids of the rendered answer (SPEC §1)."""
        where = "answers" if b is None else f"answers[{b}]"
        if not isinstance(answer, str):
            raise TypeError(f"{where}: expected a str, got {type(answer).__name__}")
        cached = self._answer_cache.get(answer)
        if cached is not None:
            return cached
        if not answer.strip():
            raise ValueError(f"{where}: the ground-truth answer is empty")
        text = self.config.answer_template.format(answer=answer)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{where}: not valid text ({exc.reason} at {exc.start}); a tokenizer cannot encode it") from None
        ids = np.asarray(
            self.tokenizer.encode(text, add_special_tokens=self.config.answer_add_special_tokens), dtype=np.int64
        ).reshape(-1)
        if ids.size == 0:
            raise ValueError(f"{where}: {text!r} encodes to no tokens")
        self._answer_cache[answer] = ids
        return ids

    def _items(self, prompts, responses, answers, group_ids) -> list[Item]:
        for name, value in (("prompts", prompts), ("responses", responses), ("answers", answers)):
            if isinstance(value, (str, torch.Tensor, np.ndarray)) or not isinstance(value, Sequence):
                raise TypeError(f"{name}: expected a list (one entry per trajectory), got {type(value).__name__}")
        n = len(prompts)
        if len(responses) != n or len(answers) != n:
            raise ValueError(
                f"prompts, responses, answers: expected equal lengths, got {n}, {len(responses)}, {len(answers)}"
            )
        R.check_group_ids(group_ids, n)
        rows = self._vocab_rows()
        items = [
            Item(
                prompt=self._token_ids(prompts[b], f"prompts[{b}]", rows, allow_empty=False),
                response=self._token_ids(responses[b], f"responses[{b}]", rows, allow_empty=True),
                answer=self.answer_ids(answers[b], b),
            )
            for b in range(n)
        ]
        limit = self.adapter.max_positions
        for b, it in enumerate(items):
            # The longest real sequence either backend builds is [q, y, a[:-1]].
            length = len(it.prompt) + len(it.response) + len(it.answer) - 1
            if limit is not None and length > limit:
                raise ValueError(
                    f"responses[{b}]: prompt + response + answer need {length} positions but the "
                    f"model's position embedding has {limit}; shorten the trajectory"
                )
        return items

    def _plans(self, items: list[Item]):
        rows = self._vocab_rows()
        p = self._planner
        if p is None or p.rows != rows or p.tables.vocab_size != len(self.tokenizer):
            p = self._planner = Planner(self.tokenizer, self.config, rows, self.use_cpp_planner)
        return p.plan_batch([it.response for it in items])

    # ---- scoring ----------------------------------------------------------------------------
    def score(
        self,
        prompts: Sequence,
        responses: Sequence,
        answers: Sequence[str],
        group_ids: Sequence[Hashable] | None = None,
        width: int | None = None,
    ) -> RePROResult:
        """Score a batch of trajectories (SPEC §1-6).

        Args:
            prompts: N token-id lists (or 1-D integer tensors), chat template applied, each non-empty.
            responses: N token-id lists (or tensors) sampled by the policy; may be empty.
            answers: N ground-truth answer strings.
            group_ids: N hashables (GRPO groups) or None (every trajectory its own group).
            width: pad the ``[N, ·]`` outputs to this many columns (at least the longest response).
        """
        items = self._items(prompts, responses, answers, group_ids)
        n_max = max((len(it.response) for it in items), default=0)
        if width is None:
            width = n_max
        elif isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < n_max:
            raise ValueError(f"width: expected an int >= the longest response ({n_max}), got {width!r}")
        plans = self._plans(items)
        k, backend = self.config.num_segments, self.backend
        groups, stats, points, values = [], [], [], []
        with scoring_mode(self.model):
            if items:
                self.adapter.verify(items[0].prompt[:8].tolist())
            for group in backend.groups(items, [plan.num_points(k) for plan in plans]):
                lengths = [len(items[b].response) for b in group]
                counts = [plans[b].num_points(k) for b in group]
                phase1 = backend.token_stats(items, group)  # log-probs, entropies (fast: + cache)
                chosen = R.select_points(phase1.entropies, lengths, [plans[b] for b in group], k, self.kernels)
                values.append(backend.answer_logprobs(items, group, chosen, counts, phase1))  # J(P_j)
                groups.append(group)
                stats.append((phase1.logprobs, phase1.entropies))
                points.append(chosen)
                del phase1  # frees the cache before the next micro-batch
        return self._result(items, plans, groups, stats, points, values, group_ids, int(width))

    def score_padded(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        answers: Sequence[str],
        group_ids: Sequence[Hashable] | None = None,
    ) -> RePROResult:
        """`score` on a trainer's padded tensors (SPEC §7): ``[N, Lq]`` prompts (left- or
        right-padded), ``[N, Lc]`` completions (real tokens first), masks 1 on real tokens.
        Every padded output is ``[N, Lc]``, aligned with ``completion_ids``."""
        rows = []
        for name, ids, mask in (("prompt", prompt_ids, prompt_mask), ("completion", completion_ids, completion_mask)):
            for what, t in ((f"{name}_ids", ids), (f"{name}_mask", mask)):
                if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.dtype.is_floating_point or t.dtype.is_complex:
                    raise TypeError(f"{what}: expected a 2-D integer (or bool) tensor, got "
                                    f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
            if mask.shape != ids.shape:
                raise ValueError(f"{name}_mask: expected the shape of {name}_ids {tuple(ids.shape)}, got {tuple(mask.shape)}")
            m = mask.detach().cpu()
            if not ((m == 0) | (m == 1)).all():
                raise ValueError(f"{name}_mask: expected 0/1 values")
            m = m.bool()
            # Prompts: one contiguous run of real tokens (left or right padding); completions:
            # real tokens first.
            first = m.long().argmax(1)
            last = m.shape[1] - 1 - m.flip(1).long().argmax(1)
            contiguous = ~m.any(1) | (last - first + 1 == m.sum(1))
            bad = ~contiguous if name == "prompt" else (m[:, 1:] & ~m[:, :-1]).any(1)
            if bad.any():
                raise ValueError(f"{name}_mask: row {int(bad.nonzero()[0])} is not one contiguous run of real tokens"
                                 + (" at the start" if name == "completion" else ""))
            ids_cpu = ids.detach().cpu()
            rows.append([ids_cpu[b][m[b]] for b in range(len(m))])
        if prompt_ids.shape[0] != completion_ids.shape[0]:
            raise ValueError(f"completion_ids: expected {prompt_ids.shape[0]} rows like prompt_ids, got {completion_ids.shape[0]}")
        return self.score(rows[0], rows[1], answers, group_ids, width=completion_ids.shape[1])

    def _result(self, items, plans, groups, stats, points, values, group_ids, width) -> RePROResult:
        cfg, device = self.config, self.adapter.device
        order = [b for g in groups for b in g]
        lp = torch.cat([s[0] for s in stats]) if stats else torch.zeros(0, device=device)
        ent = torch.cat([s[1] for s in stats]) if stats else torch.zeros(0, device=device)
        # The one host copy of the call: points, J values and a finiteness flag together.
        flag = (~torch.isfinite(lp)).sum() + (~torch.isfinite(ent)).sum()
        host = torch.cat([*(p.double() for p in points), *(v.double() for v in values), flag.double()[None]]).cpu()
        n_points = sum(len(p) for p in points)
        all_points, all_j = host[:n_points].long().tolist(), host[n_points:-1]
        bad = bool(host[-1] > 0) or not torch.isfinite(all_j).all()

        per_b_points: list[list[int]] = [[] for _ in items]
        per_b_j: list[torch.Tensor] = [torch.zeros(0, dtype=torch.float64) for _ in items]
        offset = 0
        for b in order:
            m1 = plans[b].num_points(cfg.num_segments)
            per_b_points[b] = all_points[offset : offset + m1]
            per_b_j[b] = all_j[offset : offset + m1]
            offset += m1
        if bad:
            self._name_non_finite(items, order, lp, ent, per_b_j)

        parts = [R.segment_scores(-j, cfg) for j in per_b_j]
        raw = [p["rewards"] for p in parts]
        process_adv = R.process_advantages(raw, per_b_points, width, group_ids, cfg.normalize, device)

        lengths = [len(items[b].response) for b in order]
        rows = torch.from_numpy(np.repeat(np.asarray(order, dtype=np.int64), lengths)).to(device)
        cols = torch.from_numpy(np.concatenate([np.arange(n) for n in lengths]) if lengths else np.zeros(0, np.int64)).to(device)
        token_logprobs = torch.zeros(len(items), width, dtype=torch.float32, device=device).index_put_((rows, cols), lp.float())
        token_entropies = torch.zeros(len(items), width, dtype=torch.float32, device=device).index_put_((rows, cols), ent.float())
        response_mask = torch.arange(width)[None] < torch.tensor([len(it.response) for it in items])[:, None]
        reward_mask = torch.zeros(len(items), width, dtype=torch.bool)
        for b, p in enumerate(per_b_points):
            reward_mask[b, torch.tensor(p[1:], dtype=torch.long) - 1] = True

        def f32(xs):
            return [x.to(torch.float32) for x in xs]

        return RePROResult(
            points=per_b_points,
            nll=f32(-j for j in per_b_j),
            s_magn=f32(p["s_magn"] for p in parts),
            s_stab=f32(p["s_stab"] for p in parts),
            score=f32(p["score"] for p in parts),
            rewards=f32(raw),
            think_end=[p.think_end for p in plans],
            token_rewards=R.place(raw, per_b_points, width).to(device, torch.float32),
            process_advantages=process_adv,
            token_logprobs=token_logprobs,
            token_entropies=token_entropies,
            reward_mask=reward_mask.to(device),
            response_mask=response_mask.to(device),
        )

    @staticmethod
    def _name_non_finite(items, order, lp, ent, per_b_j) -> None:
        offset = 0
        for b in order:
            n = len(items[b].response)
            ok = torch.isfinite(lp[offset : offset + n]).all() and torch.isfinite(ent[offset : offset + n]).all()
            if not (ok and torch.isfinite(per_b_j[b]).all()):
                raise ValueError(
                    f"model: produced NaN or inf logits while scoring trajectory {b}; "
                    "check the model's weights and dtype"
                )
            offset += n
