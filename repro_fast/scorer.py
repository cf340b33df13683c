"""`RePROScorer` and `RePROResult`: the public entry point (SPEC §7).

Every entry point runs one path, `RePROScorer._run`, and differs only in where phase 1 comes
from (`repro_fast.phase1`)::

    validate         _items / _unpadded      types, lengths, id range, answers (config.check_*)
    plan (host)      _plans                  think bounds E, F and candidates (segments.py, SPEC §1, §3)
    per micro-batch  source.passes           phase 1: token log-probs + entropies, hidden states,
                                             KV cache (the scorer's own forward, a trainer's recorded
                                             forward or its recorded generate())
      select         select_points           SPEC §4 on the device (selection.py)
      J              backend.mean_answer_logprobs   J at every point (SPEC §2): the extend step
    result           _result                 one host copy -> points and J per trajectory ->
                                             finiteness check -> segment scores (rewards.py,
                                             SPEC §5) -> padded outputs and process advantages
                                             (advantages.py, SPEC §6)

    score(prompts, responses, ...)           OwnForward
    score_padded(prompt_ids, ...)            unpad -> score
    score_phase1(record, prompt_ids, ...)    RecordedForward (capture_phase1)
    score_generation(record, ...)            RecordedGeneration (capture_generation)
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from repro_fast.advantages import MAX_WIDTH, process_advantages
from repro_fast.backends import BACKENDS, Backend, FastBackend, Item, build_backend
from repro_fast.batching import padded
from repro_fast.config import (
    RePROConfig,
    check_choice,
    check_group_ids,
    check_int,
    check_sequence,
    check_type,
)
from repro_fast.dispatch import resolve_kernels, resolve_planner
from repro_fast.model import ModelAdapter, scoring_mode
from repro_fast.phase1 import (
    OwnForward,
    Phase1Source,
    RecordedForward,
    RecordedGeneration,
    record_forward,
    record_generation,
)
from repro_fast.rewards import place, segment_scores
from repro_fast.segments import Plan, Planner
from repro_fast.selection import select_points


@dataclass
class RePROResult:
    """RePro scores of a batch of N trajectories (SPEC §5-6).

    Lists hold one CPU entry per trajectory ``b``. The ``[N, width]`` tensors are on the model's
    device, float32 (bool for the masks), 0 / False on padding (``width``: the longest response
    unless asked for more); except that `score_phase1` returns the trainer's own ``token_logprobs``
    tensor as it was given (its dtype, its values on padding).
    """

    points: list[list[int]]  # P_0 = 0 < P_1 < ... < P_m, the scored prefix lengths
    nll: list[torch.Tensor]  # float32 [m + 1]: NLL(P_j); nll[b][0] is the baseline NLL_0
    s_magn: list[torch.Tensor]  # this and the next three: float32 [m]
    s_stab: list[torch.Tensor]
    score: list[torch.Tensor]
    rewards: list[torch.Tensor]
    think_end: list[int]  # F: the prefix length that completes the think-end marker (n: no marker)
    token_rewards: torch.Tensor  # float32, raw reward r_j on response token P_j - 1
    process_advantages: torch.Tensor  # float32, reward-to-go of the normalized rewards
    token_logprobs: torch.Tensor  # float32, log p(y_t) at temperature tau
    token_entropies: torch.Tensor  # float32, H_t at temperature tau
    reward_mask: torch.Tensor  # bool, True exactly on the tokens that carry a reward
    response_mask: torch.Tensor  # bool, True on the n_b real response tokens

    def __len__(self) -> int:
        return len(self.points)

    @classmethod
    def concat(cls, results: Sequence[RePROResult], group_ids: Sequence[Hashable] | None = None,
               normalize: str = "group") -> RePROResult:
        """The results of consecutive slices of one batch (equal widths) as one result; the
        process advantages are normalized again over the whole batch's scopes (SPEC §6)."""
        if not results:
            raise ValueError("results: expected at least one RePROResult")
        width = results[0].token_rewards.shape[1]
        if any(r.token_rewards.shape[1] != width for r in results):
            raise ValueError(f"results: widths differ ({[r.token_rewards.shape[1] for r in results]})")
        joined = {}
        for f in fields(cls):
            if f.name == "process_advantages":
                continue  # normalized again below, over the whole batch
            parts = [getattr(r, f.name) for r in results]
            is_tensor = isinstance(parts[0], torch.Tensor)
            joined[f.name] = torch.cat(parts) if is_tensor else [x for p in parts for x in p]
        joined["process_advantages"] = process_advantages(joined["rewards"], joined["points"], width,
                                                          group_ids, normalize,
                                                          results[0].token_rewards.device)
        return cls(**joined)


@dataclass
class StageOutputs:
    """What the device stages of one call produced, one entry per micro-batch, still on the device."""

    groups: list[list[int]] = field(default_factory=list)  # the trajectories b of each micro-batch
    logprobs: list[torch.Tensor] = field(default_factory=list)  # their token log-probs, back to back
    entropies: list[torch.Tensor] = field(default_factory=list)  # their token entropies, back to back
    points: list[torch.Tensor] = field(default_factory=list)  # their points P (int64), back to back
    values: list[torch.Tensor] = field(default_factory=list)  # J at those points

    def add(self, group: list[int], logprobs: torch.Tensor, entropies: torch.Tensor, points: torch.Tensor,
            values: torch.Tensor) -> None:
        """Keep one micro-batch's outputs (``group``: its trajectories, in the order of the tensors)."""
        self.groups.append(group)
        self.logprobs.append(logprobs)
        self.entropies.append(entropies)
        self.points.append(points)
        self.values.append(values)

    @property
    def order(self) -> list[int]:
        """Every trajectory b, in micro-batch order (the order of the packed tensors)."""
        return [b for g in self.groups for b in g]


class RePROScorer:
    """Scores chains of thought with RePro (SPEC §1-6).

    Args:
        model: a Hugging Face causal LM (``...ForCausalLM``); ``tokenizer``: its tokenizer.
        config: a `RePROConfig` (default: the paper's settings); assign ``scorer.config`` later
            to change settings.
        backend: ``"naive"`` (one forward per scored prefix: the reference and the baseline),
            ``"fast"`` (one pass over each CoT, its KV cache reused by every answer copy) or
            ``"auto"`` (= ``"fast"``).
        kernels: ``"auto"`` (Triton on CUDA, torch on CPU), ``"triton"`` or ``"torch"``; planner:
            ``"auto"`` (C++ when built), ``"cpp"`` or ``"python"``. None reads the environment
            (`repro_fast.dispatch`); both are resolved once, here.

    A ``torch.compile``-d model is scored through the module it wraps (same parameters); PEFT
    models score as they are. One scorer may be shared by several threads: its calls are
    serialized (each one switches the model to eval mode and restores every module's flag on
    exit, which two overlapping calls would undo for each other).
    """

    def __init__(self, model, tokenizer, config: RePROConfig | None = None, backend: str = "auto",
                 kernels: str | None = None, planner: str | None = None):
        check_choice(backend, "backend", BACKENDS)
        # torch.compile's wrapper has no forward of its own to call by class (verify() does); the
        # module it wraps holds the same parameters.
        wrapped = getattr(model, "_orig_mod", None)
        if isinstance(model, torch.nn.Module) and isinstance(wrapped, torch.nn.Module):
            model = wrapped
        head = getattr(model, "get_output_embeddings", None)
        if not isinstance(model, torch.nn.Module) or not callable(head) or head() is None:
            raise TypeError("model: expected a Hugging Face causal LM with an LM head "
                            f"(e.g. AutoModelForCausalLM), got {type(model).__name__}")
        if not all(callable(getattr(tokenizer, method, None)) for method in ("encode", "decode")):
            raise TypeError(f"tokenizer: expected a Hugging Face tokenizer, got {type(tokenizer).__name__}")
        self.model, self.tokenizer = model, tokenizer
        self._lock = threading.RLock()
        self.backend_name = "fast" if backend == "auto" else backend
        self.kernels = resolve_kernels(kernels, head().weight.device)
        self.use_cpp_planner = resolve_planner(planner) == "cpp"
        self.adapter: ModelAdapter
        self.backend: Backend
        self.config = RePROConfig() if config is None else config  # builds adapter and backend
        self._vocab_rows()

    @property
    def config(self) -> RePROConfig:
        """The `RePROConfig` in use; assign a new one to change settings (the backend follows)."""
        return self._config

    @config.setter
    def config(self, config: RePROConfig) -> None:
        """Switch to ``config``: the model adapter (at its temperature) and the backend (under its
        token budget) are built from it, and the caches that depend on it are dropped."""
        self._config = check_type(config, "config", RePROConfig, "a RePROConfig or None")
        self.adapter = ModelAdapter(self.model, config.temperature, self.kernels)
        self.backend = build_backend(self.backend_name, self.adapter, config.token_budget, self.kernels)
        self._planner: Planner | None = None
        # Keyed by the tokenizer's state too: added tokens change how an answer encodes.
        self._answer_cache: dict[tuple, np.ndarray] = {}

    def _vocab_rows(self) -> int:
        """Valid ids: ``[0, embedding rows)``; a policy may sample ids past ``len(tokenizer)``
        when its embedding is padded (Qwen), so those are scored (their text is empty)."""
        # weight.shape, not num_embeddings: PEFT wraps the embedding (LoRA, trainable tokens)
        # in modules that keep the weight but not that attribute.
        rows = self.model.get_input_embeddings().weight.shape[0]
        if len(self.tokenizer) > rows:
            raise ValueError(f"tokenizer: its vocabulary has {len(self.tokenizer)} tokens but the model's "
                             f"embedding has {rows} rows; use the tokenizer the model was trained with")
        return rows

    @staticmethod
    def _token_ids(value, name: str, rows: int, allow_empty: bool) -> np.ndarray:
        """``value`` as int64 ids, each in ``[0, rows)``."""
        if isinstance(value, torch.Tensor):
            if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
                raise TypeError(f"{name}: expected integer token ids, got a {value.dtype} tensor")
            value = value.detach().cpu().numpy()
        if isinstance(value, (list, tuple)):
            for t, v in enumerate(value):
                if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                    raise TypeError(f"{name}: expected integer token ids, got {type(v).__name__} {v!r} "
                                    f"at position {t}")
            value = np.asarray(value, dtype=object)  # Python ints of any size, compared exactly
        elif not isinstance(value, np.ndarray):
            raise TypeError(f"{name}: expected a list of token ids or a 1-D integer tensor, "
                            f"got {type(value).__name__}")
        elif value.ndim != 1 or value.dtype.kind not in "iu":
            raise TypeError(f"{name}: expected a 1-D integer array, got {value.dtype} shape {value.shape}")
        bad = np.flatnonzero((value < 0) | (value >= rows))
        if bad.size:
            t = int(bad[0])
            raise ValueError(f"{name}: token id {int(value[t])} at position {t} is outside the model's "
                             f"vocabulary [0, {rows})")
        if not allow_empty and len(value) == 0:
            raise ValueError(f"{name}: is empty; a prompt needs at least one token")
        return np.asarray(value, dtype=np.int64)

    def answer_ids(self, answer: str, b: int | None = None) -> np.ndarray:
        """Token ids of the rendered answer (SPEC §1)."""
        where = "answers" if b is None else f"answers[{b}]"
        check_type(answer, where, str, "a str")
        key = (answer, id(self.tokenizer), len(self.tokenizer))
        if key in self._answer_cache:
            return self._answer_cache[key]
        if not answer.strip():
            raise ValueError(f"{where}: the ground-truth answer is empty")
        text = self.config.answer_template.format(answer=answer)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{where}: not valid text ({exc.reason} at {exc.start}); "
                             "a tokenizer cannot encode it") from None
        special = self.config.answer_add_special_tokens
        ids = np.asarray(self.tokenizer.encode(text, add_special_tokens=special), dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError(f"{where}: {text!r} encodes to no tokens")
        self._answer_cache[key] = ids
        return ids

    def _items(self, prompts, responses, answers, group_ids) -> list[Item]:
        n = len(check_sequence(prompts, "prompts"))
        check_sequence(responses, "responses", n)
        check_sequence(answers, "answers", n)
        check_group_ids(group_ids, n)
        rows, limit = self._vocab_rows(), self.adapter.max_positions
        items = []
        for b in range(n):
            item = Item(
                prompt=self._token_ids(prompts[b], f"prompts[{b}]", rows, allow_empty=False),
                response=self._token_ids(responses[b], f"responses[{b}]", rows, allow_empty=True),
                answer=self.answer_ids(answers[b], b),
            )
            # The longest real sequence either backend builds is [q, y, a[:-1]].
            length = len(item.prompt) + len(item.response) + len(item.answer) - 1
            if limit is not None and length > limit:
                raise ValueError(f"responses[{b}]: prompt + response + answer need {length} positions but "
                                 f"the model's position embedding has {limit}; shorten the trajectory")
            items.append(item)
        return items

    def _plans(self, items: list[Item]) -> list[Plan]:
        """SPEC §1, §3 on the host: one `Plan` per response (the planner is rebuilt when the
        tokenizer or the embedding changed)."""
        rows = self._vocab_rows()
        p = self._planner
        if (p is None or p.tokenizer is not self.tokenizer or p.rows != rows
                or p.tables.vocab_size != len(self.tokenizer)):
            p = self._planner = Planner(self.tokenizer, self.config, rows, self.use_cpp_planner)
        return p.plan_batch([it.response for it in items])

    def score(self, prompts: Sequence, responses: Sequence, answers: Sequence[str],
              group_ids: Sequence[Hashable] | None = None, width: int | None = None) -> RePROResult:
        """Score a batch of trajectories (SPEC §1-6).

        Args:
            prompts: N token-id lists (or 1-D integer tensors), chat template applied, each non-empty.
            responses: N token-id lists (or tensors) sampled by the policy; may be empty.
            answers: N ground-truth answer strings.
            group_ids: N hashables (GRPO groups) or None (every trajectory its own group).
            width: pad the ``[N, ·]`` outputs to this many columns (at least the longest response).
        """
        with self._lock:
            return self._score(prompts, responses, answers, group_ids, width)

    def _score(self, prompts, responses, answers, group_ids, width) -> RePROResult:
        items = self._items(prompts, responses, answers, group_ids)
        n_max = max((len(it.response) for it in items), default=0)
        if width is not None:
            width = check_int(width, "width (at least the longest response)", n_max, max(n_max, MAX_WIDTH))
        return self._run(items, OwnForward(self.backend), group_ids, n_max if width is None else width)

    def _run(self, items: list[Item], source: Phase1Source, group_ids: Sequence[Hashable] | None,
             width: int) -> RePROResult:
        """The one scoring path of every entry point: plan, then per micro-batch of ``source``
        phase 1 -> select (SPEC §4) -> J at every point (the extend step), then the result."""
        plans = self._plans(items)
        k = self.config.num_segments
        counts = [plan.num_points(k) for plan in plans]
        out = StageOutputs()
        with scoring_mode(self.model), source.precision():
            if items:
                self.adapter.verify(items[0].prompt[:8].tolist())
            try:
                for group, response_pass in source.passes(items, counts):
                    lengths = [len(items[b].response) for b in group]
                    chosen = select_points(response_pass.entropies, lengths, [plans[b] for b in group], k,
                                           self.kernels)
                    values = self.backend.mean_answer_logprobs(  # J at every point
                        items, group, chosen, [counts[b] for b in group], response_pass)
                    out.add(group, response_pass.logprobs, response_pass.entropies, chosen, values)
                    del response_pass  # frees this micro-batch's cache before the next one
            finally:
                source.release()  # a recorded cache back as it was recorded
        result = self._result(items, plans, out, group_ids, width)
        if source.token_logprobs is not None:  # a trainer's own log-probs, returned as they are
            result.token_logprobs = source.token_logprobs
        return result

    def score_padded(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                     completion_mask: torch.Tensor, answers: Sequence[str],
                     group_ids: Sequence[Hashable] | None = None) -> RePROResult:
        """`score` on a trainer's padded tensors (SPEC §7): ``[N, Lq]`` prompts (left- or
        right-padded), ``[N, Lc]`` completions (real tokens first), masks 1 on real tokens.
        Every padded output is ``[N, Lc]``, aligned with ``completion_ids``."""
        prompts, completions, _ = self._unpadded(prompt_ids, prompt_mask, completion_ids, completion_mask)
        return self.score(prompts, completions, answers, group_ids, width=completion_ids.shape[1])

    def fast_backend_refusal(self, max_length: int | None = None) -> str | None:
        """Why the fast backend cannot score this model exactly for real sequences (prompt +
        response + answer) of up to ``max_length`` tokens (None: any length), or None when it can:
        a sliding window shorter than that, a hybrid model whose cache holds recurrent layers, an
        encoder-decoder. Trainers ask once, when they are built, and use ``backend="naive"`` then."""
        with self._lock:
            if max_length is not None:
                check_int(max_length, "max_length", 1)
            try:
                backend = self.backend if isinstance(self.backend, FastBackend) else FastBackend(
                    self.adapter, self.config.token_budget, self.kernels)
            except TypeError as exc:  # an encoder-decoder
                return str(exc)
            return backend.refusal(max_length)

    def _check_records_allowed(self, what: str) -> None:
        if self.backend_name != "fast":
            raise ValueError(f"{what}: needs backend='fast' (the naive backend keeps no KV cache)")

    def capture_phase1(self):
        """A context manager that records phase 1 from a forward the trainer runs itself.

        Inside the block, run the trainer's own no-grad forward of this scorer's model over
        ``[prompt_ids | completion_ids]`` (one decoder call: one micro-batch), with the model in
        eval mode (no dropout), the concatenated masks as ``attention_mask`` and, for models with
        learned positions (GPT-2), ``position_ids`` that count from each row's first real token.
        It records what that call was fed, its last hidden states and its KV cache (the cache is
        switched on, which changes no value). Then pass the record to `score_phase1` with that
        forward's log-probs and entropies::

            with scorer.capture_phase1() as record:
                logps, entropies = trainer_forward(...)  # [N, Lc] each
            result = scorer.score_phase1(record, prompt_ids, prompt_mask, completion_ids,
                                         completion_mask, answers, group_ids,
                                         token_logprobs=logps, token_entropies=entropies)

        The record holds the hidden states and the cache until you drop it; scoring leaves it as
        it was (scoring it again gives the same result). One capture at a time per model.
        """
        self._check_records_allowed("capture_phase1")
        return record_forward(self.adapter, self.config)

    def score_phase1(self, phase1, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                     completion_ids: torch.Tensor, completion_mask: torch.Tensor, answers: Sequence[str],
                     group_ids: Sequence[Hashable] | None = None, *, token_logprobs: torch.Tensor,
                     token_entropies: torch.Tensor) -> RePROResult:
        """`score_padded` whose phase 1 is the trainer's own forward (SPEC §7), recorded by
        `capture_phase1`: only selection (from ``token_entropies``) and the extend step run here.

        Prompts must be left-padded (flush against the completions, as TRL and verl lay them out).
        ``token_logprobs`` and ``token_entropies``: ``[N, Lc]`` at temperature tau, as the trainer
        computed them. The record is checked against the tensors first: the tokens, mask and
        positions its forward was fed, no dropout in effect, a KV cache holding every column, a
        sliding window (if any) covering every answer copy, the scorer's config unchanged since
        the capture; where it is not the pass `score_padded` would run, `UnusableRecord` says why
        (fall back to `score_padded`). The result's ``token_logprobs`` is the trainer's tensor
        itself; the other outputs agree with `score_padded` within the precision's bound.
        """
        with self._lock:
            prompts, completions, masks = self._unpadded(prompt_ids, prompt_mask, completion_ids,
                                                         completion_mask)
            self._check_records_allowed("score_phase1")
            items = self._items(prompts, completions, answers, group_ids)
            source = RecordedForward(phase1, self.adapter, self.config, items, prompt_ids, masks,
                                     completion_ids, token_logprobs, token_entropies)
            return self._run(items, source, group_ids, completion_ids.shape[1])

    def capture_generation(self):
        """A context manager that records phase 1 from the trainer's own sampling.

        Inside the block, call ``model.generate(input_ids=prompt_ids, attention_mask=prompt_mask,
        ...)`` of this scorer's model once: left-padded prompts, one sequence per row, the default
        dynamic KV cache, the model in eval mode (no dropout), sampling at the config's
        temperature. Its prefill and decoding steps are one pass over ``[q | y]`` (the last
        sampled token aside) whose hidden states, KV cache and sampling logits are phase 1, so
        RePro adds one more cached step, selection and the extend step::

            with scorer.capture_generation() as record:
                sequences = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, ...)
            completion_ids = sequences[:, prompt_ids.shape[1]:]
            result = scorer.score_generation(record, prompt_ids, prompt_mask, completion_ids,
                                             completion_mask, answers, group_ids)

        The record holds the hidden states and the cache until you drop it; scoring leaves it as
        it was (scoring it again gives the same result). One capture at a time per model.
        """
        self._check_records_allowed("capture_generation")
        return record_generation(self.adapter, self.config)

    def score_generation(self, generation, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                         completion_ids: torch.Tensor, completion_mask: torch.Tensor, answers: Sequence[str],
                         group_ids: Sequence[Hashable] | None = None) -> RePROResult:
        """`score_padded` whose phase 1 is the trainer's ``model.generate`` call, recorded by
        `capture_generation`.

        ``prompt_ids`` / ``prompt_mask``: the left-padded tensors ``generate`` was given;
        ``completion_ids``: the columns it sampled (a trainer may pad them further: those columns
        must be masked); ``completion_mask``: 1 on each completion's real tokens (up to and
        including its first EOS). The record is checked against them as in `score_phase1` (every
        fed token the one given here; and ``generate``, where it was called as the model's own
        method, sampled at the config's temperature); `UnusableRecord` says why a record cannot be
        used. Token log-probs and entropies come from the logits ``generate`` computed to sample
        each token (where they were not seen, from the scorer's head on the recorded hidden
        states); the extend step runs in the precision the generation ran in (its autocast state
        is recorded). Outputs agree with `score_padded` within that precision's bound (cached
        decoding sums in another order than one forward).
        """
        with self._lock:
            prompts, completions, masks = self._unpadded(prompt_ids, prompt_mask, completion_ids,
                                                         completion_mask)
            self._check_records_allowed("score_generation")
            items = self._items(prompts, completions, answers, group_ids)
            source = RecordedGeneration(generation, self.adapter, self.config, items, prompt_ids, masks,
                                        completion_ids)
            return self._run(items, source, group_ids, completion_ids.shape[1])

    def _unpadded(self, prompt_ids, prompt_mask, completion_ids, completion_mask):
        """The real tokens of each row of a trainer's padded tensors, and the two boolean masks."""
        rows, masks = [], []
        pairs = (("prompt", prompt_ids, prompt_mask), ("completion", completion_ids, completion_mask))
        for name, ids, mask in pairs:
            for what, t in ((f"{name}_ids", ids), (f"{name}_mask", mask)):
                check_type(t, what, torch.Tensor, "a 2-D integer (or bool) tensor")
                if t.is_floating_point() or t.is_complex():
                    raise TypeError(f"{what}: expected a 2-D integer (or bool) tensor, got dtype {t.dtype}")
                if t.ndim != 2:
                    raise TypeError(f"{what}: expected a 2-D integer (or bool) tensor, got shape "
                                    f"{tuple(t.shape)}")
            if mask.shape != ids.shape:
                raise ValueError(f"{name}_mask: expected the shape of {name}_ids {tuple(ids.shape)}, "
                                 f"got {tuple(mask.shape)}")
            m = mask.detach().cpu()
            if not ((m == 0) | (m == 1)).all():
                raise ValueError(f"{name}_mask: expected 0/1 values")
            m = m.bool()
            bad = _breaks_padded_layout(m, prompt=name == "prompt")
            if bad.any():
                where = " at the start" if name == "completion" else ""
                raise ValueError(f"{name}_mask: row {int(bad.nonzero()[0])} is not one contiguous run of "
                                 f"real tokens{where}")
            rows.append([row[keep] for row, keep in zip(ids.detach().cpu(), m)])
            masks.append(m)
        if prompt_ids.shape[0] != completion_ids.shape[0]:
            raise ValueError(f"completion_ids: expected {prompt_ids.shape[0]} rows like prompt_ids, "
                             f"got {completion_ids.shape[0]}")
        return rows[0], rows[1], masks

    def _result(self, items: list[Item], plans: list[Plan], out: StageOutputs,
                group_ids: Sequence[Hashable] | None, width: int) -> RePROResult:
        """The stages' device tensors -> `RePROResult`: one host copy, points and ``J`` per
        trajectory, a finiteness check, segment scores (SPEC §5), then the ``[N, width]`` outputs."""
        cfg, device, order = self.config, self.adapter.device, out.order
        lp, ent = _cat(out.logprobs, device), _cat(out.entropies, device)
        counts = [plans[b].num_points(cfg.num_segments) for b in order]
        points, j_values, finite = _host_copy(out.points, out.values, lp, ent, counts, order, len(items))
        lengths = [len(items[b].response) for b in order]
        if not finite:
            _check_finite(order, lp.split(lengths), ent.split(lengths), j_values)
        parts = [segment_scores(-j, cfg) for j in j_values]
        return RePROResult(
            points=points,
            nll=[-j.float() for j in j_values],
            **{key: [p[key].float() for p in parts] for key in ("s_magn", "s_stab", "score", "rewards")},
            think_end=[p.think_end for p in plans],
            **self._padded_outputs(items, order, points, [p["rewards"] for p in parts], lp, ent, lengths,
                                   group_ids, width),
        )

    def _padded_outputs(self, items, order, points, rewards, lp, ent, lengths, group_ids,
                        width: int) -> dict[str, torch.Tensor]:
        """The ``[N, width]`` fields of `RePROResult`, rows by trajectory b, on the model's device:
        raw rewards placed on ``P_j - 1`` and their process advantages (SPEC §5-6), token
        statistics (``lp``, ``ent``: packed in micro-batch ``order``), and the two masks."""
        device = self.adapter.device
        unsort = torch.as_tensor(np.argsort(order), device=device)  # rows in `order` -> rows by b
        # A 1 placed on every rewarded token marks them.
        rewarded = place([torch.ones(len(p) - 1) for p in points], points, width) > 0
        response_mask = torch.arange(width)[None] < torch.tensor([len(it.response) for it in items])[:, None]
        return dict(
            token_rewards=place(rewards, points, width).to(device, torch.float32),
            process_advantages=process_advantages(rewards, points, width, group_ids, self.config.normalize,
                                                  device),
            token_logprobs=padded(lp.float(), lengths, width)[unsort],
            token_entropies=padded(ent.float(), lengths, width)[unsort],
            reward_mask=rewarded.to(device),
            response_mask=response_mask.to(device),
        )


def _cat(tensors: list[torch.Tensor], device) -> torch.Tensor:
    """The micro-batches' packed values as one tensor (empty when there was no micro-batch)."""
    return torch.cat(tensors) if tensors else torch.zeros(0, device=device)


def _host_copy(points: list[torch.Tensor], values: list[torch.Tensor], lp: torch.Tensor, ent: torch.Tensor,
               counts: list[int], order: list[int],
               n: int) -> tuple[list[list[int]], list[torch.Tensor], bool]:
    """The call's one device -> host copy: every point, every ``J`` and a count of non-finite token
    statistics travel together. Returns the points and ``J`` (float64) of each trajectory b, and
    whether every ``J`` and every token statistic is finite."""
    flag = (~torch.isfinite(lp)).sum() + (~torch.isfinite(ent)).sum()
    host = torch.cat([t.double() for t in (*points, *values, flag[None])]).cpu()
    n_points = sum(counts)
    per_b_points: list[list[int]] = [None] * n  # type: ignore[list-item]
    per_b_j: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
    for b, p, j in zip(order, host[:n_points].long().split(counts), host[n_points:-1].split(counts)):
        per_b_points[b], per_b_j[b] = p.tolist(), j
    finite = not (host[-1] > 0 or not torch.isfinite(host[n_points:-1]).all())
    return per_b_points, per_b_j, finite


def _check_finite(order: list[int], lps, ents, j_values: list[torch.Tensor]) -> None:
    """Name the first trajectory (in micro-batch ``order``) whose token statistics or ``J`` are not finite."""
    for b, lp_b, ent_b in zip(order, lps, ents):
        if not all(torch.isfinite(t).all() for t in (lp_b, ent_b, j_values[b])):
            raise ValueError(f"model: produced NaN or inf logits while scoring trajectory {b}; "
                             "check the model's weights and dtype")


def _breaks_padded_layout(mask: torch.Tensor, prompt: bool) -> torch.Tensor:
    """SPEC §7 ``score_padded`` layout, True on the rows that break it: a prompt row is one
    contiguous run of real tokens (left- or right-padded); a completion's real tokens come first."""
    rises = (mask[:, 1:] & ~mask[:, :-1]).sum(1)  # padding -> real steps, each starting a run
    if prompt:
        return rises + mask[:, :1].sum(1) > 1  # runs = rises + (1 if column 0 is real)
    return rises > 0  # a real token after padding
