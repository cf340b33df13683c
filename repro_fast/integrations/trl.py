"""RePro in Hugging Face TRL: `RePROGRPOTrainer`, a `trl.GRPOTrainer` whose advantages add RePro's
process term (README "Use it with TRL"). TRL has no public hook for it, so three private
``GRPOTrainer`` methods are overridden, and a TRL outside the tested minor release is refused."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import NamedTuple

SUPPORTED_TRL = ">=1.16,<1.17"  # the minor release whose private methods this module overrides

try:
    _trl_version = version("trl")
except PackageNotFoundError:
    raise ImportError(f"repro_fast.integrations.trl needs trl{SUPPORTED_TRL}, which is not installed; "
                      f"run: pip install 'repro-fast[trl]'  (or pip install 'trl{SUPPORTED_TRL}')") from None
if tuple(int(x) for x in _trl_version.split(".")[:2] if x.isdigit()) != (1, 16):
    raise ImportError(f"repro_fast.integrations.trl supports trl{SUPPORTED_TRL} (it overrides private "
                      f"GRPOTrainer methods whose behaviour changes between releases); "
                      f"found trl {_trl_version}. Install a supported one: pip install 'trl{SUPPORTED_TRL}'")

import torch  # noqa: E402
from accelerate.utils import gather_object  # noqa: E402
from trl import GRPOTrainer  # noqa: E402
from trl.trainer.utils import pad  # noqa: E402

from repro_fast import RePROConfig, RePROResult, RePROScorer, UnusableRecord, process_advantages  # noqa: E402
from repro_fast.backends import BACKENDS  # noqa: E402
from repro_fast.config import check_choice  # noqa: E402

__all__ = ["RePROGRPOTrainer", "RePROBatch", "PHASE1_SOURCES", "SUPPORTED_TRL"]

logger = logging.getLogger(__name__)

# Where a batch's phase 1 came from; each has a metric ``repro/phase1_<source>`` (class docstring).
PHASE1_SOURCES = ("generation", "old_logps", "own_forward")

# Tokens beyond ``max_completion_length`` that the build-time check of the fast backend assumes a
# sequence needs (a prompt token and a rendered answer); TRL 1.16 does not bound prompts, so a batch
# whose real sequences are longer than a sliding window is caught again when it is scored.
PROMPT_AND_ANSWER_AT_BUILD = 32


@dataclass
class _BatchState:
    """What RePro keeps while TRL builds one generation batch (`_generate_and_score_completions`),
    shared by the three overridden methods."""

    answers: list[str]  # this process's rows' ground-truth answers
    group_ids: list[int]  # their global prompt groups (TRL's layout)
    trl_forwards: int = 0  # TRL's `_get_per_token_logps_and_entropies` calls so far for this batch
    result: RePROResult | None = None  # set once a phase-1 source scored the batch
    source: str = "own_forward"  # one of PHASE1_SOURCES: where `result`'s phase 1 came from
    seconds: float = 0.0  # what scoring added to the step (the recorded pass itself is TRL's)


class _GatheredRow(NamedTuple):
    """One row of the generation batch as every process sends it to all (`gather_object`)."""

    rewards: torch.Tensor  # RePro's raw rewards r_1..r_m, on the CPU
    points: list[int]  # the scored prefix lengths P_0..P_m
    prompt: list[int]  # the real prompt token ids: every row of a group must share them
    final_score: float | None  # S_m, None for an empty completion (m = 0)


class _ProcessSummary(NamedTuple):
    """One process's batch summary as every process sends it to all (`gather_object`)."""

    seconds: float  # `_BatchState.seconds`
    source: str  # `_BatchState.source`


@dataclass
class RePROBatch:
    """The latest generation batch as `RePROGRPOTrainer` scored it (``trainer.repro_last``): this
    process's rows, in TRL's order before it shuffles them. Tensors are TRL's own."""

    prompt_ids: torch.Tensor  # [B, Lq], left-padded
    prompt_mask: torch.Tensor  # [B, Lq], 1 on real tokens
    completion_ids: torch.Tensor  # [B, Lc], right-padded
    completion_mask: torch.Tensor  # [B, Lc], 1 on real tokens (0 on a completion TRL masks as truncated)
    result: RePROResult  # RePro's scores of the rows
    group_ids: list[int]  # global prompt group of each row
    outcome_advantages: torch.Tensor  # [B], TRL's outcome advantage
    process_advantages: torch.Tensor  # [B, Lc], SPEC §6 over whole groups of every process
    advantages: torch.Tensor  # [B, Lc] = outcome + alpha x process: what TRL's loss receives
    phase1_source: str  # one of PHASE1_SOURCES


class RePROGRPOTrainer(GRPOTrainer):
    """`trl.GRPOTrainer` whose per-token advantages ``[B, T]`` are TRL's outcome advantage ``[B]``
    + ``alpha`` x SPEC §6's process advantages, normalized over whole groups across processes.

    Takes every `GRPOTrainer` argument, plus:
        repro_config: `RePROConfig`; its ``temperature`` must equal ``GRPOConfig.temperature`` and
            the temperature TRL samples at (a ``generation_kwargs["temperature"]`` overrides it).
        answer_column: the dataset column holding each prompt's ground-truth answer string.
        repro_backend: `RePROScorer` backend: ``"auto"`` (the one-pass fast backend, or the naive
            one where the fast backend cannot score the model: a sliding window shorter than
            ``max_completion_length`` + `PROMPT_AND_ANSWER_AT_BUILD`, a hybrid model with recurrent
            layers; the reason is logged once), ``"fast"`` (an error where it cannot) or ``"naive"``.

    Phase 1 (the pass over ``[q | y]`` that RePro extends) comes from one of `PHASE1_SOURCES`:
    ``"old_logps"``, TRL's own no-grad forward for the old log-probs, where TRL runs one (a batch
    that serves several optimizer steps, or vLLM with importance sampling); else ``"generation"``,
    TRL's transformers ``generate()`` (one cached pass); else, or where the scorer refuses the
    recorded pass (`repro_fast.UnusableRecord`: dropout in effect, a cache that dropped columns,
    positions that are not ``score()``'s, ...), ``"own_forward"``: the scorer's own eval-mode
    forward over TRL's padded batch (`RePROScorer.score_padded`; by the naive backend for a batch
    whose real sequences are longer than the model's sliding window). A refusal is logged once per
    distinct reason and never stops the run; any other error propagates.

    TRL's old-log-prob forward is recognized by where it is called, not by what it looks like:
    TRL 1.16's `_generate_and_score_completions` calls `_get_per_token_logps_and_entropies`
    first for the old log-probs, and only when
    ``gradient_accumulation_steps % (steps_per_generation * num_iterations) != 0`` or vLLM with
    ``vllm_importance_sampling_correction``; then (``beta != 0``) for the reference log-probs, on
    ``ref_model`` or on the policy with its adapter disabled; the loss forward
    (`_compute_loss`, ``compute_entropy=True``) comes after it returns. So a call is taken as the
    old-log-prob pass iff it is the first call while a batch is built, in a configuration where
    TRL runs that pass, and it is a no-grad forward of ``self.model`` without entropies, auxiliary
    loss or multimodal inputs (that order is TRL 1.16's: the reason the minor release is pinned).
    TRL's log-probs are returned as TRL computes them, bit for bit.

    Logs per generation batch: ``repro/points_per_completion``, ``repro/mean_score`` (mean final
    ``S_m``), ``repro/scoring_seconds`` (the slowest process) and ``repro/phase1_generation``,
    ``repro/phase1_old_logps``, ``repro/phase1_own_forward``: the fraction of processes whose
    phase 1 came from that source (0 or 1 with one process; the three sum to 1).
    ``repro_last`` holds the latest batch (`RePROBatch`).
    """

    def __init__(self, *args, repro_config: RePROConfig | None = None, answer_column: str = "answer",
                 repro_backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        config = RePROConfig() if repro_config is None else repro_config
        if not isinstance(config, RePROConfig):
            raise TypeError(f"repro_config: expected a repro_fast.RePROConfig, got {type(config).__name__}")
        if not isinstance(answer_column, str):
            raise TypeError(f"answer_column: expected a column name (str), got {answer_column!r}")
        check_choice(repro_backend, "repro_backend", BACKENDS)
        columns = getattr(self.train_dataset, "column_names", None)
        if columns is not None and answer_column not in columns:
            raise ValueError(f"answer_column: train_dataset has no column {answer_column!r} "
                             f"(columns: {columns}); pass the column that holds each prompt's "
                             "ground-truth answer")
        if config.temperature != self.temperature:
            raise ValueError(f"repro_config.temperature ({config.temperature}) must equal "
                             f"GRPOConfig.temperature ({self.temperature}): RePro's log-probs and "
                             "entropies are the sampling policy's")
        sampling = self._sampling_temperature()
        if config.temperature != sampling:
            raise ValueError(f"repro_config.temperature ({config.temperature}) must equal the temperature "
                             f"TRL samples at, GRPOConfig.generation_kwargs['temperature'] ({sampling}): "
                             "RePro's log-probs and entropies are the sampling policy's; set both alike")
        if self.tools or self.environment_factories is not None:
            raise ValueError("tools / environment_factory: not supported (RePro would score tool "
                             "outputs inside a completion as the model's own chain of thought)")
        if self._is_vlm:
            raise ValueError("model: vision-language models are not supported")
        self.repro_config = config
        self.answer_column = answer_column
        self.repro_scorer = self._build_scorer(config, repro_backend)
        self._naive_scorer: RePROScorer | None = None  # for a batch longer than a sliding window
        self._reasons_logged: set[str] = set()  # `_warn_once`
        generate_every = self.args.steps_per_generation * self.num_iterations  # TRL's condition, verbatim
        self._trl_runs_old_logps = (self.args.gradient_accumulation_steps % generate_every != 0
                                    or (self.use_vllm and self.vllm_importance_sampling_correction))
        self._planned_source = self._plan_phase1_source()
        self._repro_batch: _BatchState | None = None
        self.repro_last: RePROBatch | None = None

    # -- at build --------------------------------------------------------------------------------

    def _sampling_temperature(self) -> float:
        """The temperature TRL samples at: ``GRPOConfig.temperature``, unless ``generation_kwargs``
        (which TRL 1.16 lays over its own generation settings, for transformers and vLLM alike)
        sets another."""
        overrides = self.args.generation_kwargs if isinstance(self.args.generation_kwargs, dict) else {}
        temperature = overrides.get("temperature", self.temperature)
        return 1.0 if temperature is None else temperature  # transformers samples at 1.0 when unset

    def _build_scorer(self, config: RePROConfig, backend: str) -> RePROScorer:
        """The scorer on the policy, with the naive backend where the fast one cannot score this
        model for a full-length completion (logged once, here)."""
        scorer = RePROScorer(self.model, self._tokenizer, config,
                             backend="fast" if backend == "auto" else backend)
        if scorer.backend_name != "fast":
            return scorer
        longest = (None if self.max_completion_length is None
                   else self.max_completion_length + PROMPT_AND_ANSWER_AT_BUILD)
        reason = scorer.fast_backend_refusal(longest)
        if reason is None:
            return scorer
        if backend == "fast":
            raise ValueError(f"repro_backend: the fast backend cannot score this model ({reason}); "
                             "use 'auto' or 'naive'")
        logger.warning("RePROGRPOTrainer: scoring with the naive backend (one forward per scored prefix): %s",
                       reason)
        return RePROScorer(self.model, self._tokenizer, config, backend="naive")

    def _plan_phase1_source(self) -> str:
        """The source every batch tries first (TRL's configuration fixes it; `PHASE1_SOURCES`)."""
        if self.repro_scorer.backend_name != "fast":
            return "own_forward"  # the naive backend extends no cache
        if self._trl_runs_old_logps:
            return "old_logps"
        # TRL's transformers generate with one sequence per prompt row and a dynamic KV cache: one
        # cached pass whose cache the answer copies extend.
        gen = getattr(self, "generation_config", None)
        if (gen is not None and not self.use_vllm and not self.use_transformers_continuous_batching
                and gen.cache_implementation in (None, "dynamic") and (gen.num_beams or 1) == 1
                and (gen.num_return_sequences or 1) == 1 and getattr(gen, "prefill_chunk_size", None) is None
                and gen.use_cache is not False):
            return "generation"
        return "own_forward"

    # -- while TRL builds a batch ----------------------------------------------------------------

    def _is_old_logps_pass(self, batch: _BatchState | None, model, compute_entropy: bool,
                           compute_aux_loss: bool, extra: dict) -> bool:
        """Whether this `_get_per_token_logps_and_entropies` call is TRL's old-log-prob forward
        (the rule of the class docstring); ``batch.trl_forwards`` already counts this call."""
        return (batch is not None and self._trl_runs_old_logps and batch.trl_forwards == 1
                and model is self.model and not torch.is_grad_enabled() and not compute_entropy
                and not compute_aux_loss and all(v is None for v in extra.values()))

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False,
                                           compute_aux_loss=False, **kwargs):
        batch = self._repro_batch
        if batch is not None:
            batch.trl_forwards += 1
        if (self._planned_source == "old_logps" and batch is not None and batch.result is None
                and self._is_old_logps_pass(batch, model, compute_entropy, compute_aux_loss, kwargs)):
            return self._old_logps_as_phase1(batch, model, input_ids, attention_mask, logits_to_keep,
                                             batch_size, **kwargs), None, None
        return super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
            compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **kwargs)

    def _old_logps_as_phase1(self, batch: _BatchState, model, input_ids, attention_mask, logits_to_keep,
                             batch_size, **kwargs) -> torch.Tensor:
        """TRL's own old-log-prob forward, micro-batch by micro-batch as TRL runs it, recorded as
        RePro's phase 1 (with the entropies TRL's fused head computes on request); the scorer adds
        selection and the extend step per micro-batch, while its KV cache is alive. Returns TRL's
        log-probs; where the scorer refuses a record, the rest of the forward runs as TRL's own and
        the batch is left to the scorer's own forward."""
        scorer = self.repro_scorer
        split, rows = input_ids.size(1) - logits_to_keep, input_ids.size(0)
        step = batch_size or rows
        logps, results, seconds = [], [], 0.0
        for start in range(0, rows, step):
            part = slice(start, min(start + step, rows))
            lp = None
            try:
                with scorer.capture_phase1() as record:
                    lp, entropies, _ = super()._get_per_token_logps_and_entropies(
                        model, input_ids[part], attention_mask[part], logits_to_keep, batch_size=step,
                        compute_entropy=True, **kwargs)
                began = time.perf_counter()
                with self.accelerator.autocast():
                    results.append(scorer.score_phase1(
                        record, input_ids[part, :split], attention_mask[part, :split],
                        input_ids[part, split:], attention_mask[part, split:], batch.answers[part],
                        group_ids=batch.group_ids[part], token_logprobs=lp, token_entropies=entropies))
                seconds += time.perf_counter() - began
            except UnusableRecord as refusal:
                self._warn_once(str(refusal), f"TRL's old-log-prob forward is not RePro's phase 1 "
                                              f"({refusal}); such batches are scored by RePro's own forward")
                rest = start if lp is None else part.stop
                if lp is not None:
                    logps.append(lp)
                if rest < rows:  # TRL's own forward over the remaining micro-batches
                    logps.append(super()._get_per_token_logps_and_entropies(
                        model, input_ids[rest:], attention_mask[rest:], logits_to_keep, batch_size=step,
                        **kwargs)[0])
                return torch.cat(logps)
            logps.append(lp)
        batch.result = RePROResult.concat(results, batch.group_ids, self.repro_config.normalize)
        batch.source, batch.seconds = "old_logps", seconds
        return torch.cat(logps)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations,
                              has_tool_images=False):
        batch = self._repro_batch
        generate = functools.partial(super()._generate_single_turn, prompt_ids, images, multimodal_fields,
                                     num_generations, has_tool_images)
        if not (self._planned_source == "generation" and batch is not None and batch.result is None
                and len(prompt_ids) == len(batch.answers)):
            return generate()
        scorer, generated = self.repro_scorer, None
        try:
            with scorer.capture_generation() as record:
                generated = generate()
            began = time.perf_counter()
            batch.result = scorer.score_generation(
                record, *self._generated_layout(prompt_ids, generated[0], record), batch.answers,
                group_ids=batch.group_ids)
            batch.source, batch.seconds = "generation", time.perf_counter() - began
        except UnusableRecord as refusal:
            self._warn_once(str(refusal), f"TRL's generate() is not RePro's phase 1 ({refusal}); such "
                                          "batches are scored by RePro's own forward")
        return generate() if generated is None else generated  # refused before it sampled: sample unrecorded

    def _generated_layout(self, prompt_ids, completion_ids, record):
        """The tensors `generate` saw and sampled, as TRL's generation path lays them out: prompts
        left-padded (with TRL's ``pad_to_multiple_of``), completions right-padded to the sampled
        columns, masked after the first EOS (TRL's lists end there) and, with
        ``mask_truncated_completions``, wholly on a completion without one (TRL's rule)."""
        device = self.accelerator.device
        prompts = [torch.tensor(ids) for ids in prompt_ids]
        masks = [torch.ones_like(q) for q in prompts]
        prompt_tensors = [
            pad(rows, padding_value=value, padding_side="left", pad_to_multiple_of=self.pad_to_multiple_of)
            for rows, value in ((prompts, self._tokenizer.pad_token_id), (masks, 0))
        ]
        sampled = record.columns_fed - prompt_tensors[0].shape[1] + 1
        width = max([sampled] + [len(c) for c in completion_ids])
        completion_tensor = torch.full((len(completion_ids), width), self._tokenizer.pad_token_id)
        completion_mask = torch.zeros((len(completion_ids), width), dtype=torch.long)
        ends = (*self.eos_token_ids, self._tokenizer.pad_token_id)
        for row, ids in enumerate(completion_ids):
            completion_tensor[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            # A completion TRL masks as truncated is scored as empty, as in TRL's own padded batch.
            truncated = self.mask_truncated_completions and (not ids or ids[-1] not in ends)
            completion_mask[row, : len(ids)] = 0 if truncated else 1
        return (*(t.to(device) for t in prompt_tensors), completion_tensor.to(device),
                completion_mask.to(device))

    def _warn_once(self, reason: str, message: str) -> None:
        """Log ``message`` the first time ``reason`` comes up (a refusal recurs every batch)."""
        if reason not in self._reasons_logged:
            self._reasons_logged.add(reason)
            logger.warning("RePROGRPOTrainer: %s (logged once)", message)

    # -- the batch -------------------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        batch = self._batch_state(inputs, group_size)
        self._repro_batch = batch
        try:
            output = super()._generate_and_score_completions(inputs)
            if "tool_mask" in output:
                raise ValueError("rollout_func: an env_mask (tool tokens inside completions) is not "
                                 "supported")
            if batch.result is None:
                self._score_own_forward(batch, output)
        finally:
            self._repro_batch = None
        rows, summaries = self._gather(batch, output, group_size)
        outcome = output["advantages"]
        process = self._process_advantages(rows, group_size, output["completion_ids"], len(inputs))
        output["advantages"] = outcome.unsqueeze(1) + self.repro_config.alpha * process.to(outcome.dtype)
        self._log_batch_metrics(mode, rows, summaries)
        padded = {k: output[k] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")}
        self.repro_last = RePROBatch(**padded, result=batch.result, group_ids=batch.group_ids,
                                     outcome_advantages=outcome, process_advantages=process,
                                     advantages=output["advantages"], phase1_source=batch.source)
        return output

    def _batch_state(self, inputs, group_size: int) -> _BatchState:
        """This process's answers (checked) and global groups: TRL's layout puts global row i
        (process-major) in prompt group i // num_generations."""
        try:
            answers = [x[self.answer_column] for x in inputs]
        except KeyError:
            raise ValueError(f"answer_column: the batch has no column {self.answer_column!r} "
                             f"(columns: {sorted(inputs[0])})") from None
        for i, a in enumerate(answers):
            if not isinstance(a, str):
                raise TypeError(f"answer_column: {self.answer_column!r} must hold the answer strings, got "
                                f"{type(a).__name__} {a!r} in row {i}")
        offset = self.accelerator.process_index * len(inputs)
        return _BatchState(answers, group_ids=[(offset + i) // group_size for i in range(len(inputs))])

    def _score_own_forward(self, batch: _BatchState, output: dict) -> None:
        """Phase 1 by the scorer's own forward on TRL's padded batch, under TRL's autocast; by the
        naive backend where these sequences are longer than a sliding window (logged once)."""
        prompt_mask, completion_mask = output["prompt_mask"], output["completion_mask"]
        scorer = self.repro_scorer
        if scorer.backend_name == "fast" and len(batch.answers):
            answer = max(len(scorer.answer_ids(a, b)) for b, a in enumerate(batch.answers))
            longest = int((prompt_mask.sum(1) + completion_mask.sum(1)).max()) + answer
            reason = scorer.fast_backend_refusal(longest)
            if reason is not None:
                self._warn_once(reason, f"a batch scored by the naive backend: {reason}")
                scorer = self._naive()
        start = time.perf_counter()
        with self.accelerator.autocast():  # the same precision as TRL's own forward
            batch.result = scorer.score_padded(output["prompt_ids"], prompt_mask, output["completion_ids"],
                                               completion_mask, batch.answers, group_ids=batch.group_ids)
        batch.source, batch.seconds = "own_forward", time.perf_counter() - start

    def _naive(self) -> RePROScorer:
        """A naive-backend scorer on the policy, under the fast scorer's current config."""
        if self._naive_scorer is None:
            self._naive_scorer = RePROScorer(self.model, self._tokenizer, self.repro_scorer.config,
                                             backend="naive")
        elif self._naive_scorer.config is not self.repro_scorer.config:
            self._naive_scorer.config = self.repro_scorer.config
        return self._naive_scorer

    def _gather(self, batch: _BatchState, output: dict,
                group_size: int) -> tuple[list[_GatheredRow], list[_ProcessSummary]]:
        """Every process's rows (global order) and batch summaries; checks that TRL still lays a
        group out as ``group_size`` consecutive rows of one prompt."""
        result = batch.result
        local = []
        for b, (ids, mask) in enumerate(zip(output["prompt_ids"], output["prompt_mask"])):
            final = float(result.score[b][-1]) if len(result.score[b]) else None
            local.append(_GatheredRow(result.rewards[b].cpu(), list(result.points[b]),
                                      ids[mask.bool()].tolist(), final))
        rows = gather_object(local)
        processes = self.accelerator.num_processes
        if len(rows) != len(local) * processes:
            raise RuntimeError(f"expected {len(local)} rows from each of {processes} processes, "
                               f"gathered {len(rows)}")
        for i, row in enumerate(rows):
            if row.prompt != rows[i // group_size * group_size].prompt:
                raise RuntimeError(
                    f"row {i} is not a completion of its group's prompt: TRL's sampler no longer lays "
                    f"groups out as {group_size} consecutive rows (supported trl{SUPPORTED_TRL})")
        summaries = gather_object([_ProcessSummary(batch.seconds, batch.source)])
        return rows, summaries

    def _process_advantages(self, rows: list[_GatheredRow], group_size: int, completion_ids: torch.Tensor,
                            local_rows: int) -> torch.Tensor:
        """SPEC §6 over whole groups of every process's raw rewards (a group can span processes),
        this process's rows ``[B, Lc]``."""
        width = max([completion_ids.size(1)] + [row.points[-1] for row in rows])
        process = process_advantages([row.rewards for row in rows], [row.points for row in rows], width,
                                     group_ids=[i // group_size for i in range(len(rows))],
                                     normalize=self.repro_config.normalize, device=completion_ids.device)
        offset = self.accelerator.process_index * local_rows
        return process[offset: offset + local_rows, : completion_ids.size(1)]

    def _log_batch_metrics(self, mode: str, rows: list[_GatheredRow],
                           summaries: list[_ProcessSummary]) -> None:
        """The ``repro/*`` metrics of the class docstring, over every process's rows."""
        metrics = self._metrics[mode]
        metrics["repro/points_per_completion"].append(sum(len(row.points) - 1 for row in rows) / len(rows))
        finals = [row.final_score for row in rows if row.final_score is not None]
        if finals:
            metrics["repro/mean_score"].append(sum(finals) / len(finals))
        metrics["repro/scoring_seconds"].append(max(s.seconds for s in summaries))
        for source in PHASE1_SOURCES:
            share = sum(s.source == source for s in summaries) / len(summaries)
            metrics[f"repro/phase1_{source}"].append(share)
