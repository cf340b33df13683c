"""`RePROScorer` and `RePROResult`: the public entry point (SPEC §7).

One `score()` call: validate -> plan (host, SPEC §1, §3) -> backend (token statistics, selection,
``J`` at every point) -> rewards (SPEC §5-6, shared by all backends) -> `RePROResult`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from repro_fast import _planner_cpp, ops
from repro_fast import rewards as R
from repro_fast.backends.common import Item, ModelAdapter, TokenStats
from repro_fast.config import RePROConfig
from repro_fast.segments import Planner, Plan

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
    Padded ``[N, n_max]`` tensors on the model's device (0 / False on padding):
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


@contextlib.contextmanager
def _eval_mode(model):
    """Score without dropout and without autograd; leave the model in the mode it came in."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


class _Selector:
    """SPEC §4 for a group of trajectories at once, then ``P = sorted({0} ∪ selected ∪ {F})``.

    Two forms. `__call__` returns host lists (the naive backend): on CPU through the C++
    planner's `select_points` in one GIL-free call when it is built, else through
    `repro_fast.ops.segment_select` and one device-to-host copy per group. `on_device` (the fast
    backend) keeps the points on the device, so no host round trip is needed between phase 1
    and phase 2. All of them are tested against `repro_fast.rewards.select_points`.
    """

    def __init__(self, plans: list[Plan], k: int, device: torch.device):
        self.plans, self.k, self.device = plans, k, device

    def _top_k(self, batch: list[int], stats: list[TokenStats]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max([len(s.entropies) for s in stats] + [1])
        entropies = torch.zeros(len(batch), width, dtype=torch.float32, device=self.device)
        candidates = np.zeros((len(batch), width), dtype=bool)
        for r, (b, s) in enumerate(zip(batch, stats)):
            entropies[r, : len(s.entropies)] = s.entropies
            candidates[r, self.plans[b].candidates] = True
        return ops.segment_select(entropies, torch.from_numpy(candidates).to(self.device), self.k)

    def __call__(self, batch: list[int], stats: list[TokenStats]) -> list[list[int]]:
        if self.device.type == "cpu" and _planner_cpp.use_cpp():
            return _planner_cpp.select_points_batch(
                [s.entropies.float().numpy() for s in stats],
                [self.plans[b].candidates for b in batch],
                self.k,
                [self.plans[b].think_end for b in batch],
            )
        starts, counts = self._top_k(batch, stats)
        starts, counts = starts.cpu().tolist(), counts.cpu().tolist()
        return [
            sorted({0, self.plans[b].think_end, *starts[r][: counts[r]]})
            for r, b in enumerate(batch)
        ]

    def on_device(self, batch: list[int], stats: list[TokenStats]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(points [B, k + 2] int64, counts [B])`` on the device, points padded with -1.

        No sort is needed: every candidate lies in ``[1, E)`` and ``E < F`` when a think end is
        found (``E = F = n`` otherwise), so ``P = [0, starts..., F]`` is already ascending and
        duplicate-free, except that ``F = 0`` (an empty response) adds no point.
        """
        starts, counts = self._top_k(batch, stats)
        think_end = torch.tensor([self.plans[b].think_end for b in batch], device=self.device)
        points = torch.full((len(batch), self.k + 2), -1, dtype=torch.int64, device=self.device)
        points[:, 0] = 0
        points[:, 1 : self.k + 1] = starts
        has_end = think_end > 0
        points.scatter_(1, (1 + counts)[:, None], torch.where(has_end, think_end, -1)[:, None])
        return points, 1 + counts + has_end.long()


class RePROScorer:
    """Scores chains of thought with RePro (SPEC §1-6).

    Args:
        model: a Hugging Face causal LM (``...ForCausalLM``).
        tokenizer: its tokenizer (``len(tokenizer)`` must not exceed the model's embedding rows).
        config: a `RePROConfig` (default: the paper's settings).
        backend: ``"naive"`` (one forward per scored prefix: the reference and the baseline),
            ``"fast"`` (one pass over each CoT with its KV cache reused by every answer copy),
            or ``"auto"`` (= ``"fast"``).
    """

    def __init__(self, model, tokenizer, config: RePROConfig | None = None, backend: str = "auto"):
        if config is None:
            config = RePROConfig()
        if not isinstance(config, RePROConfig):
            raise TypeError(f"config: expected a RePROConfig or None, got {type(config).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        if not isinstance(model, torch.nn.Module) or not callable(
            getattr(model, "get_output_embeddings", None)
        ) or model.get_output_embeddings() is None:
            raise TypeError(
                f"model: expected a Hugging Face causal LM with an LM head "
                f"(e.g. AutoModelForCausalLM), got {type(model).__name__}"
            )
        if not callable(getattr(tokenizer, "decode", None)) or not callable(
            getattr(tokenizer, "encode", None)
        ):
            raise TypeError(f"tokenizer: expected a Hugging Face tokenizer, got {type(tokenizer).__name__}")
        self.model_vocab = model.get_input_embeddings().num_embeddings
        if len(tokenizer) > self.model_vocab:
            raise ValueError(
                f"tokenizer: its vocabulary has {len(tokenizer)} tokens but the model's embedding "
                f"has {self.model_vocab} rows; use the tokenizer the model was trained with"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.backend_name = "fast" if backend == "auto" else backend
        self.planner = Planner(tokenizer, config)
        self.adapter = ModelAdapter(model, config.temperature)
        if self.backend_name == "naive":
            from repro_fast.backends.naive import NaiveBackend

            self.backend = NaiveBackend(self.adapter, config.token_budget)
        else:
            from repro_fast.backends.fast import FastBackend

            self.backend = FastBackend(self.adapter, config.token_budget)
        self._answer_cache: dict[str, np.ndarray] = {}

    # ---- validation -------------------------------------------------------------------------
    def _token_ids(self, value, name: str, allow_empty: bool) -> np.ndarray:
        if isinstance(value, torch.Tensor):
            if value.ndim != 1:
                raise ValueError(f"{name}: expected a 1-D tensor of token ids, got shape {tuple(value.shape)}")
            if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
                raise TypeError(f"{name}: expected integer token ids, got a {value.dtype} tensor")
            ids = value.detach().cpu().numpy().astype(np.int64)
        elif isinstance(value, np.ndarray):
            if value.ndim != 1 or value.dtype.kind not in "iu":
                raise TypeError(f"{name}: expected a 1-D integer array, got {value.dtype} shape {value.shape}")
            ids = value.astype(np.int64)
        elif isinstance(value, (list, tuple)):
            for t, v in enumerate(value):
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                    raise TypeError(
                        f"{name}: expected integer token ids, got {type(v).__name__} {v!r} at position {t}"
                    )
            ids = np.asarray(value, dtype=np.int64).reshape(-1)
        else:
            raise TypeError(
                f"{name}: expected a list of token ids or a 1-D integer tensor, got {type(value).__name__}"
            )
        if not allow_empty and ids.size == 0:
            raise ValueError(f"{name}: is empty; a prompt needs at least one token")
        vocab = len(self.tokenizer)
        bad = np.flatnonzero((ids < 0) | (ids >= vocab))
        if bad.size:
            t = int(bad[0])
            raise ValueError(
                f"{name}: token id {int(ids[t])} at position {t} is outside the vocabulary [0, {vocab})"
            )
        return ids

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
        ids = np.asarray(
            self.tokenizer.encode(text, add_special_tokens=self.config.answer_add_special_tokens),
            dtype=np.int64,
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
        if group_ids is not None:
            if isinstance(group_ids, (str, torch.Tensor)) or not isinstance(group_ids, Sequence):
                raise TypeError(f"group_ids: expected a list of hashables or None, got {type(group_ids).__name__}")
            if len(group_ids) != n:
                raise ValueError(f"group_ids: expected {n} ids (one per trajectory), got {len(group_ids)}")
            for b, g in enumerate(group_ids):
                if not isinstance(g, Hashable):
                    raise TypeError(f"group_ids[{b}]: expected a hashable, got {type(g).__name__}")
        items = [
            Item(
                prompt=self._token_ids(prompts[b], f"prompts[{b}]", allow_empty=False),
                response=self._token_ids(responses[b], f"responses[{b}]", allow_empty=True),
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

    # ---- scoring ----------------------------------------------------------------------------
    def score(
        self,
        prompts: Sequence,
        responses: Sequence,
        answers: Sequence[str],
        group_ids: Sequence[Hashable] | None = None,
    ) -> RePROResult:
        """Score a batch of trajectories (SPEC §1-6).

        Args:
            prompts: N token-id lists (or 1-D integer tensors), chat template applied, each non-empty.
            responses: N token-id lists (or tensors) sampled by the policy; may be empty.
            answers: N ground-truth answer strings.
            group_ids: N hashables (GRPO groups) or None (every trajectory its own group).
        """
        items = self._items(prompts, responses, answers, group_ids)
        plans = self.planner.plan_batch([it.response for it in items])
        select = _Selector(plans, self.config.num_segments, self.adapter.device)

        with _eval_mode(self.model):
            if items:
                self.adapter.verify(items[0].prompt[:8].tolist())
            stats, points, answer_lp = self.backend.run(items, select)
        self._check_finite(stats, answer_lp)
        return self._assemble(items, plans, points, stats, answer_lp, group_ids)

    @staticmethod
    def _check_finite(stats: list[TokenStats], answer_lp: list[torch.Tensor]) -> None:
        # One reduction (one device sync) for the batch; the per-trajectory loop only runs to
        # name the culprit once something is wrong.
        parts = [t for s in stats for t in (s.logprobs, s.entropies)]
        if parts and bool(torch.isfinite(torch.cat(parts)).all()) and all(
            bool(torch.isfinite(j).all()) for j in answer_lp  # CPU tensors: no sync
        ):
            return
        for b, (s, j) in enumerate(zip(stats, answer_lp)):
            if not (torch.isfinite(s.logprobs).all() and torch.isfinite(s.entropies).all()
                    and torch.isfinite(j).all()):
                raise ValueError(
                    f"model: produced NaN or inf logits while scoring trajectory {b}; "
                    "check the model's weights and dtype"
                )

    def _assemble(self, items, plans: list[Plan], points, stats, answer_lp, group_ids) -> RePROResult:
        cfg = self.config
        n_max = max((len(it.response) for it in items), default=0)
        nll, parts = [], []
        for j_values in answer_lp:
            curve = -j_values.to(torch.float64)
            nll.append(curve)
            parts.append(R.segment_scores(curve, cfg))
        raw = [p["rewards"] for p in parts]
        normalized = R.normalize_rewards(raw, cfg.normalize, group_ids)
        token_rewards = R.place(raw, points, n_max)
        process_adv = R.reward_to_go(R.place(normalized, points, n_max))

        n_items = len(items)
        device = self.adapter.device
        # Token statistics stay on the device (no host round trip); the masks come from
        # host-side lengths and points.
        logprobs = torch.zeros(n_items, n_max, dtype=torch.float32, device=device)
        entropies = torch.zeros(n_items, n_max, dtype=torch.float32, device=device)
        response_mask = torch.zeros(n_items, n_max, dtype=torch.bool)
        reward_mask = torch.zeros(n_items, n_max, dtype=torch.bool)
        for b, (it, s) in enumerate(zip(items, stats)):
            n = len(it.response)
            logprobs[b, :n] = s.logprobs
            entropies[b, :n] = s.entropies
            response_mask[b, :n] = True
            if len(points[b]) > 1:
                reward_mask[b, torch.tensor(points[b][1:]) - 1] = True

        def f32(xs):
            return [x.to(torch.float32) for x in xs]

        return RePROResult(
            points=points,
            nll=f32(nll),
            s_magn=f32(p["s_magn"] for p in parts),
            s_stab=f32(p["s_stab"] for p in parts),
            score=f32(p["score"] for p in parts),
            rewards=f32(raw),
            think_end=[p.think_end for p in plans],
            token_rewards=token_rewards.to(device, torch.float32),
            process_advantages=process_adv.to(device, torch.float32),
            token_logprobs=logprobs,
            token_entropies=entropies,
            reward_mask=reward_mask.to(device),
            response_mask=response_mask.to(device),
        )
