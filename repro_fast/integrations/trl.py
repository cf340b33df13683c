"""RePro in Hugging Face TRL: `RePROGRPOTrainer`, a `trl.GRPOTrainer` whose advantages add RePro's
process term (README "Use it with TRL"). TRL has no public hook for it, so three private
``GRPOTrainer`` methods are overridden, and a TRL outside the tested minor release is refused."""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version

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

from repro_fast import RePROConfig, RePROResult, RePROScorer, process_advantages  # noqa: E402

__all__ = ["RePROGRPOTrainer", "SUPPORTED_TRL"]


class RePROGRPOTrainer(GRPOTrainer):
    """`trl.GRPOTrainer` whose per-token advantages ``[B, T]`` are TRL's outcome advantage ``[B]``
    + ``alpha`` x SPEC §6's process advantages, normalized over whole groups across processes.

    Takes every `GRPOTrainer` argument, plus:
        repro_config: `RePROConfig`; its ``temperature`` must equal ``GRPOConfig.temperature``.
        answer_column: the dataset column holding each prompt's ground-truth answer string.
        repro_backend: `RePROScorer` backend, ``"auto"`` (the one-pass scorer) or ``"naive"``.

    Logs ``repro/*`` metrics (README). ``repro_last`` holds the latest batch (this process's rows,
    before TRL shuffles them): TRL's padded prompt and completion ids and masks, the `RePROResult`,
    the group ids, the outcome advantages ``[B]``, the process and the final advantages ``[B, T]``.
    """

    def __init__(self, *args, repro_config: RePROConfig | None = None, answer_column: str = "answer",
                 repro_backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        config = RePROConfig() if repro_config is None else repro_config
        if not isinstance(config, RePROConfig):
            raise TypeError(f"repro_config: expected a repro_fast.RePROConfig, got {type(config).__name__}")
        if not isinstance(answer_column, str):
            raise TypeError(f"answer_column: expected a column name (str), got {answer_column!r}")
        columns = getattr(self.train_dataset, "column_names", None)
        if columns is not None and answer_column not in columns:
            raise ValueError(f"answer_column: train_dataset has no column {answer_column!r} "
                             f"(columns: {columns}); pass the column that holds each prompt's "
                             "ground-truth answer")
        if config.temperature != self.temperature:
            raise ValueError(f"repro_config.temperature ({config.temperature}) must equal "
                             f"GRPOConfig.temperature ({self.temperature}): RePro's log-probs and "
                             "entropies are the sampling policy's")
        if self.tools or self.environment_factories is not None:
            raise ValueError("tools / environment_factory: not supported (RePro would score tool "
                             "outputs inside a completion as the model's own chain of thought)")
        if self._is_vlm:
            raise ValueError("model: vision-language models are not supported")
        self.repro_config = config
        self.answer_column = answer_column
        self.repro_scorer = RePROScorer(self.model, self._tokenizer, config, backend=repro_backend)
        # Where TRL runs its old-log-prob forward, that forward is RePro's phase 1 (any precision: TRL
        # keeps its own log-probs, bit for bit). With a PEFT adapter and beta != 0, TRL's reference
        # forward also runs on self.model without grad and could be taken for it: not then.
        self._repro_reuse_logps = (
            self.repro_scorer.backend_name == "fast" and not (self.beta != 0.0 and self.ref_model is None)
        )
        # Otherwise TRL's own sampling is phase 1 (`capture_generation`): transformers' generate with
        # one sequence per prompt row and a dynamic KV cache, the cache that the answer copies extend.
        generate_every = self.args.steps_per_generation * self.num_iterations
        runs_old_logps = self.args.gradient_accumulation_steps % generate_every != 0 or self.use_vllm
        gen = getattr(self, "generation_config", None)
        self._repro_from_generation = (
            self.repro_scorer.backend_name == "fast" and gen is not None and not self.use_vllm
            and not self.use_transformers_continuous_batching
            and not (runs_old_logps and self._repro_reuse_logps)
            and gen.cache_implementation in (None, "dynamic") and (gen.num_beams or 1) == 1
            and (gen.num_return_sequences or 1) == 1 and getattr(gen, "prefill_chunk_size", None) is None
            and gen.use_cache is not False
        )
        self._repro_batch: dict | None = None
        self.repro_last: dict | None = None

    def _repro_score(self, prompt_ids, prompt_mask, completion_ids, completion_mask):
        batch = self._repro_batch
        start = time.perf_counter()
        with self.accelerator.autocast():  # the same precision as TRL's own forward
            batch["result"] = self.repro_scorer.score_padded(
                prompt_ids, prompt_mask, completion_ids, completion_mask,
                batch["answers"], group_ids=batch["group_ids"],
            )
        batch["seconds"] = time.perf_counter() - start
        return batch["result"]

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False,
                                           compute_aux_loss=False, **kwargs):
        batch = self._repro_batch
        # Inside `_generate_and_score_completions`, a no-grad forward of the policy itself before
        # the batch is scored is TRL's old-log-prob pass (with the PEFT reference excluded above).
        is_old_logps = (
            batch is not None and batch["result"] is None and model is self.model
            and not torch.is_grad_enabled() and not compute_entropy and not compute_aux_loss
            and all(v is None for v in kwargs.values())
        )
        if is_old_logps:
            batch["asked_old_logps"] = True
            if self._repro_reuse_logps:
                return self._old_logps_as_phase1(model, input_ids, attention_mask, logits_to_keep,
                                                 batch_size, **kwargs), None, None
        return super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
            compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **kwargs)

    def _old_logps_as_phase1(self, model, input_ids, attention_mask, logits_to_keep, batch_size, **kwargs):
        """TRL's own old-log-prob forward, micro-batch by micro-batch as TRL runs it, recorded as
        RePro's phase 1 (with the entropies TRL's fused head computes on request); the scorer adds
        selection and the extend step per micro-batch, while its KV cache is alive."""
        batch, scorer = self._repro_batch, self.repro_scorer
        split, rows = input_ids.size(1) - logits_to_keep, input_ids.size(0)
        step = batch_size or rows
        logps, results, seconds = [], [], 0.0
        for start in range(0, rows, step):
            part = slice(start, min(start + step, rows))
            with scorer.capture_phase1() as phase1:
                lp, entropies, _ = super()._get_per_token_logps_and_entropies(
                    model, input_ids[part], attention_mask[part], logits_to_keep, batch_size=step,
                    compute_entropy=True, **kwargs)
            began = time.perf_counter()
            with self.accelerator.autocast():
                results.append(scorer.score_phase1(
                    phase1, input_ids[part, :split], attention_mask[part, :split], input_ids[part, split:],
                    attention_mask[part, split:], batch["answers"][part], group_ids=batch["group_ids"][part],
                    token_logprobs=lp, token_entropies=entropies))
            seconds += time.perf_counter() - began
            logps.append(lp)
        batch["result"] = RePROResult.concat(results, batch["group_ids"], self.repro_config.normalize)
        batch["seconds"], batch["reused"] = seconds, True
        return torch.cat(logps)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations,
                              has_tool_images=False):
        batch = self._repro_batch
        capture = (self._repro_from_generation and batch is not None and batch["result"] is None
                   and len(prompt_ids) == len(batch["answers"]))
        if not capture:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        scorer = self.repro_scorer
        with scorer.capture_generation() as generation:
            completion_ids, logprobs = super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        if generation.broken is not None or generation.calls == 0:
            return completion_ids, logprobs  # not one cached pass: scored later by the scorer's own forward
        began = time.perf_counter()
        batch["result"] = scorer.score_generation(
            generation, *self._generated_layout(prompt_ids, completion_ids, generation),
            batch["answers"], group_ids=batch["group_ids"])
        batch["seconds"], batch["from_generation"] = time.perf_counter() - began, True
        return completion_ids, logprobs

    def _generated_layout(self, prompt_ids, completion_ids, generation):
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
        sampled = generation.columns_fed - prompt_tensors[0].shape[1] + 1
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

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        try:
            answers = [x[self.answer_column] for x in inputs]
        except KeyError:
            raise ValueError(f"answer_column: the batch has no column {self.answer_column!r} "
                             f"(columns: {sorted(inputs[0])})") from None
        for i, a in enumerate(answers):
            if not isinstance(a, str):
                raise TypeError(f"answer_column: {self.answer_column!r} must hold the answer strings, got "
                                f"{type(a).__name__} {a!r} in row {i}")
        # TRL's layout: global row i (process-major) belongs to prompt group i // num_generations.
        offset = self.accelerator.process_index * len(inputs)
        group_ids = [(offset + i) // group_size for i in range(len(inputs))]
        padded = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")  # TRL's output keys
        self._repro_batch = batch = dict(answers=answers, group_ids=group_ids, result=None, seconds=0.0,
                                         asked_old_logps=False, reused=False, from_generation=False)
        try:
            output = super()._generate_and_score_completions(inputs)
            if "tool_mask" in output:
                raise ValueError("rollout_func: an env_mask (tool tokens inside completions) "
                                 "is not supported")
            result = batch["result"] or self._repro_score(*(output[k] for k in padded))
        finally:
            self._repro_batch = None

        # A group can span processes: normalize over whole groups of every process's raw rewards.
        prompts = [ids[mask.bool()].tolist()
                   for ids, mask in zip(output["prompt_ids"], output["prompt_mask"])]
        local = [(result.rewards[b].cpu(), list(result.points[b]), prompts[b],
                  float(result.score[b][-1]) if len(result.score[b]) else None) for b in range(len(inputs))]
        rows = gather_object(local)
        if len(rows) != len(inputs) * self.accelerator.num_processes:
            raise RuntimeError(f"expected {len(inputs)} rows from each of {self.accelerator.num_processes} "
                               f"processes, gathered {len(rows)}")
        all_groups = [i // group_size for i in range(len(rows))]
        for i, row in enumerate(rows):
            if row[2] != rows[all_groups[i] * group_size][2]:
                raise RuntimeError(
                    f"row {i} is not a completion of its group's prompt: TRL's sampler no longer lays "
                    f"groups out as {group_size} consecutive rows (supported trl{SUPPORTED_TRL})")
        completion_ids = output["completion_ids"]
        width = max([completion_ids.size(1)] + [row[1][-1] for row in rows])
        process = process_advantages([r[0] for r in rows], [r[1] for r in rows], width, group_ids=all_groups,
                                     normalize=self.repro_config.normalize, device=completion_ids.device)
        process = process[offset: offset + len(inputs), : completion_ids.size(1)]
        outcome = output["advantages"]
        output["advantages"] = outcome.unsqueeze(1) + self.repro_config.alpha * process.to(outcome.dtype)

        metrics = self._metrics[mode]
        metrics["repro/points_per_completion"].append(sum(len(r[1]) - 1 for r in rows) / len(rows))
        finals = [r[3] for r in rows if r[3] is not None]
        if finals:
            metrics["repro/mean_score"].append(sum(finals) / len(finals))
        metrics["repro/scoring_seconds"].append(max(gather_object([batch["seconds"]])))
        if batch["asked_old_logps"]:
            metrics["repro/old_logps_reused"].append(float(batch["reused"]))
        if self._repro_from_generation:
            metrics["repro/generation_reused"].append(float(batch["from_generation"]))
        self.repro_last = dict(result=result, group_ids=group_ids, outcome_advantages=outcome,
                               process_advantages=process, advantages=output["advantages"],
                               old_logps_reused=batch["reused"], generation_reused=batch["from_generation"],
                               **{k: output[k] for k in padded})
        return output
