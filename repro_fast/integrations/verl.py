"""RePro in verl 0.9.x (README "Use it with verl"; wiring in ``examples/verl/``). Worker side: each
DP rank scores its share of the batch and writes raw rewards (normalizing there would see partial
groups) and log-probs. Trainer side: SPEC §6 normalization over whole groups (``uid``), then
``advantages += alpha * process_advantages * response_mask`` on verl's own outcome advantages.
FSDP workers only: Megatron workers are not supported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Sequence

import numpy as np
import torch

try:
    from tensordict import TensorDict
    from verl import DataProto
    from verl.single_controller.base.decorator import make_nd_compute_dataproto_dispatch_fn, register
except ImportError as exc:  # name what to install, not only the first missing module
    raise ImportError(f"repro_fast.integrations.verl needs verl 0.9.x (and its tensordict): "
                      f"pip install 'verl==0.9.1' ({exc})") from exc

from repro_fast import RePROConfig, RePROScorer
from repro_fast.advantages import process_advantages as _process_advantages

REWARDS_KEY = "repro_rewards"  # float32, raw r_j on response token P_j - 1, 0 elsewhere
MASK_KEY = "repro_reward_mask"  # int64, 1 exactly where a reward sits
LOGPROBS_KEY = "repro_log_probs"  # float32, the scorer's log p(y_t) at temperature tau
OUTPUT_KEYS = (REWARDS_KEY, MASK_KEY, LOGPROBS_KEY)


# -- Converters ----------------------------------------------------------------------------


def _field(batch, key: str):
    td = batch.batch if isinstance(batch, DataProto) else batch
    if not isinstance(td, TensorDict):
        raise TypeError(f"batch: expected a verl DataProto or a TensorDict, got {type(batch).__name__}")
    if key not in td.keys():
        raise KeyError(f"batch: has no {key!r} field (fields: {sorted(td.keys())})")
    return td[key]


def _nested_to_padded(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.nested.to_padded_tensor(t, 0)
    lengths = t.offsets().diff().to(ids.device)
    return ids, (torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]).long()


def scorer_inputs(batch) -> dict[str, torch.Tensor]:
    """``RePROScorer.score_padded``'s ``prompt_ids, prompt_mask, completion_ids, completion_mask``
    from a verl batch: ``DataProto`` or ``TensorDict``, dense (left-padded ``prompts``, right-padded
    ``responses``, ``attention_mask [N, Lq + Lc]``) or nested (jagged ``prompts``, ``responses``).
    A completion's real tokens are all non-padding response tokens (tool outputs included: the
    model reads them), i.e. the attention mask, not verl's ``response_mask``."""
    prompts, responses = _field(batch, "prompts"), _field(batch, "responses")
    if prompts.is_nested != responses.is_nested:
        raise ValueError("batch: 'prompts' and 'responses' must both be nested or both be dense")
    if responses.is_nested:
        prompt_ids, prompt_mask = _nested_to_padded(prompts)
        completion_ids, completion_mask = _nested_to_padded(responses)
    else:
        attention = _field(batch, "attention_mask")
        lq, lc = prompts.shape[1], responses.shape[1]
        if attention.shape != (prompts.shape[0], lq + lc):
            raise ValueError(f"batch: 'attention_mask' must be [N, Lq + Lc] = {[prompts.shape[0], lq + lc]}, "
                             f"got {list(attention.shape)}")
        prompt_ids, prompt_mask = prompts, attention[:, :lq].long()
        completion_ids, completion_mask = responses, attention[:, lq:].long()
    return dict(prompt_ids=prompt_ids, prompt_mask=prompt_mask,
                completion_ids=completion_ids, completion_mask=completion_mask)


def to_batch_layout(values: torch.Tensor, batch) -> torch.Tensor:
    """``[N, W]`` right-padded response values -> the layout of ``batch['responses']``: a jagged
    nested tensor of each response's length, or dense ``[N, Lc]`` (cut or zero-padded)."""
    responses = _field(batch, "responses")
    if values.dim() != 2 or values.shape[0] != responses.shape[0]:
        raise ValueError(f"values: expected [N={responses.shape[0]}, W], got {list(values.shape)}")
    if not responses.is_nested:
        return torch.nn.functional.pad(values, (0, responses.shape[1] - values.shape[1]))  # < 0 cuts
    lengths = responses.offsets().diff().tolist()
    if lengths and max(lengths) > values.shape[1]:
        raise ValueError(f"values: width {values.shape[1]} < the longest response ({max(lengths)})")
    return torch.nested.as_nested_tensor([values[b, :n] for b, n in enumerate(lengths)], layout=torch.jagged)


def to_dense(values: torch.Tensor, width: int | None = None) -> torch.Tensor:
    """Nested ``[N, (n_b)]`` -> dense ``[N, width]`` (zero-padded); dense passes through."""
    if not values.is_nested:
        return values
    padded, _ = _nested_to_padded(values)
    return padded if width is None else torch.nn.functional.pad(padded, (0, width - padded.shape[1]))


def non_tensor_list(batch, key: str) -> list:
    """A per-trajectory non-tensor field (``uid``, ``reward_model``) as a Python list, from a
    ``DataProto``'s ``non_tensor_batch`` or a ``TensorDict``'s ``NonTensorStack``."""
    if isinstance(batch, DataProto) and key in batch.non_tensor_batch:
        return list(batch.non_tensor_batch[key])
    value = _field(batch, key)
    return list(value.tolist()) if hasattr(value, "tolist") else list(value)


def answers_from_batch(batch, key: str = "reward_model", field: str = "ground_truth") -> list[str]:
    """Ground-truth answers where verl's data preprocessing puts them:
    ``reward_model[b]['ground_truth']`` (``examples/data_preprocess/gsm8k.py``)."""
    out = []
    for b, entry in enumerate(non_tensor_list(batch, key)):
        if not isinstance(entry, dict) or field not in entry:
            raise ValueError(f"batch[{key!r}][{b}]: expected a dict with a {field!r} entry, got {entry!r}")
        out.append(str(entry[field]))
    return out


# -- Worker side ---------------------------------------------------------------------------


def hf_module(module: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model inside an FSDP1 wrapper (FSDP2 modules are the model itself)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP1

    while isinstance(module, FSDP1):
        module = module.module
    return module


@contextlib.contextmanager
def full_weights(module: torch.nn.Module):
    """Unshard ``module``'s FSDP1/FSDP2 parameters for a scoring pass (a no-op if not sharded):
    the scorer calls the decoder and the LM head weight outside the root module's forward, where
    FSDP's hooks would leave the head and embeddings sharded. One transient full copy per rank,
    nothing cached. Collective: every rank of the FSDP group enters."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP1

    if isinstance(module, FSDP1):
        with FSDP1.summon_full_params(module, writeback=False, recurse=True):
            yield
        return
    units = [m for m in module.modules() if isinstance(m, FSDPModule)]
    # Reshard-after-forward is on where the group has post-forward mesh info (torch 2.4+).
    resharding = [m._get_fsdp_state()._fsdp_param_group.post_forward_mesh_info is not None for m in units]
    try:
        for m in units:
            m.set_reshard_after_forward(False, recurse=False)
            m.unshard()
        yield
    finally:
        for m, flag in zip(units, resharding):
            m.reshard()
            m.set_reshard_after_forward(flag, recurse=False)


def score_batch(scorer: RePROScorer, batch, answers: Sequence[str] | None = None,
                module: torch.nn.Module | None = None) -> TensorDict:
    """Worker-side step: score a rank's verl batch and return ``repro_rewards``, ``repro_reward_mask``
    and ``repro_log_probs`` in the layout of ``batch['responses']``. ``scorer`` runs on the actor's HF
    model (``hf_module(engine.module)``); ``answers`` default to ``answers_from_batch(batch)``;
    ``module`` (default ``scorer.model``) is the FSDP-wrapped module that ``full_weights`` unshards."""
    inputs = scorer_inputs(batch)
    answers = answers_from_batch(batch) if answers is None else list(answers)
    with full_weights(scorer.model if module is None else module), torch.no_grad():
        # No group ids: the raw rewards do not depend on them; normalization is trainer-side.
        result = scorer.score_padded(**inputs, answers=answers)
    values = {REWARDS_KEY: result.token_rewards.float(), MASK_KEY: result.reward_mask.long(),
              LOGPROBS_KEY: result.token_logprobs.float()}
    n = inputs["completion_ids"].shape[0]
    return TensorDict({k: to_batch_layout(v.cpu(), batch) for k, v in values.items()}, batch_size=[n])


class RePROWorkerMixin:
    """Adds ``compute_repro_rewards`` to verl's ``ActorRolloutRefWorker`` (put it first in the
    bases). Dispatched like ``compute_log_prob``: each DP rank scores its share of the batch."""

    _repro_scorer: RePROScorer | None = None

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
    def compute_repro_rewards(self, data: TensorDict) -> TensorDict:
        """Score this rank's share of the batch with the actor's current weights; returns the raw
        rewards, their mask and the scorer's log-probs as ``repro_*`` fields (README, verl)."""
        engine = self.actor.engine
        if self._repro_scorer is None:
            fields = dict(self.config.get("repro", {}) or {})
            backend = fields.pop("backend", "auto")
            for key in ("alpha", "normalize"):  # trainer-side settings
                fields.pop(key, None)
            self._repro_scorer = RePROScorer(hf_module(engine.module), engine.model_config.tokenizer,
                                             RePROConfig(**fields), backend)
        with engine.eval_mode():
            return score_batch(self._repro_scorer, data, module=engine.module)


# -- Trainer side --------------------------------------------------------------------------


def batch_process_advantages(batch, group_ids: Sequence[Hashable] | None = None,
                             normalize: str = "group") -> torch.Tensor:
    """SPEC §6 process advantages ``[N, Lc]`` of a whole batch from its ``repro_rewards`` and
    ``repro_reward_mask`` (dense or nested), normalized over groups ``group_ids`` (default: the
    batch's ``uid``)."""
    responses = _field(batch, "responses")
    width = None if responses.is_nested else responses.shape[1]
    rewards_tok = to_dense(_field(batch, REWARDS_KEY), width)
    mask = to_dense(_field(batch, MASK_KEY), width).bool()
    if rewards_tok.shape != mask.shape:
        raise ValueError(f"batch: {REWARDS_KEY} {list(rewards_tok.shape)} and {MASK_KEY} "
                         f"{list(mask.shape)} differ")
    rewards = [row[keep] for row, keep in zip(rewards_tok, mask)]
    points = [[0] + (keep.nonzero().flatten() + 1).tolist() for keep in mask]
    if group_ids is None:
        group_ids = non_tensor_list(batch, "uid")
    return _process_advantages(rewards, points, mask.shape[1], group_ids=group_ids, normalize=normalize)


def add_process_advantages(data: DataProto, alpha: float = 0.1, normalize: str = "group") -> DataProto:
    """Trainer-side step on a dense ``DataProto`` after verl's estimator has written
    ``advantages``: ``advantages += alpha * process_advantages * response_mask`` (in place;
    returned for chaining). ``returns`` stay verl's."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha: expected a number, got {alpha!r}")
    adv = _field(data, "advantages")
    process = batch_process_advantages(data, normalize=normalize).to(adv.device, adv.dtype)
    data.batch["advantages"] = adv + alpha * process * _field(data, "response_mask").to(adv.dtype)
    return data


def compute_advantage(data: DataProto, *, alpha: float = 0.1, normalize: str = "group",
                      **verl_kwargs) -> DataProto:
    """verl's ``ray_trainer.compute_advantage`` (any estimator; ``verl_kwargs`` are its
    arguments), then ``add_process_advantages``."""
    from verl.trainer.ppo.ray_trainer import compute_advantage as verl_compute_advantage

    return add_process_advantages(verl_compute_advantage(data, **verl_kwargs), alpha, normalize)


def _add_configured_process_advantages(data: DataProto, config) -> None:
    repro = config.algorithm.get("repro", {}) or {}
    add_process_advantages(data, float(repro.get("alpha", 0.1)), str(repro.get("normalize", "group")))


class RePROTrainerMixin:
    """For a subclass of verl's v1 ``PPOTrainer`` (put it first in the bases): scores after the old
    log-probs and adds the process advantages after ``_compute_advantage``, through TransferQueue."""

    def _compute_old_log_prob(self, batch, metrics: dict):
        batch = super()._compute_old_log_prob(batch, metrics)
        self.actor_rollout_wg.compute_repro_rewards(batch)  # outputs land in TransferQueue
        return batch

    def _compute_advantage(self, batch, metrics: dict):
        import transfer_queue as tq
        from verl.workers.utils.padding import response_to_nested

        batch = super()._compute_advantage(batch, metrics)
        fields = ["uid", "responses", "response_mask", "advantages", REWARDS_KEY, MASK_KEY]
        td = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        data = DataProto(batch=td.to_padded_tensor())
        data.non_tensor_batch["uid"] = np.array(data.batch.pop("uid").tolist(), dtype=object)
        _add_configured_process_advantages(data, self.config)
        advantages = response_to_nested(data.batch["advantages"], td["response_mask"])
        out = TensorDict({"advantages": advantages}, batch_size=len(batch))
        return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=out)


class RePROLegacyTrainerMixin:
    """For verl's legacy ``RayPPOTrainer`` (put it first in the bases): scores next to the old
    log-probs and adds the process advantages right before the actor update, the first overridable
    point after its ``compute_advantage`` (a module-level function)."""

    def _compute_old_log_prob(self, batch: DataProto):
        old_log_prob, mfu = super()._compute_old_log_prob(batch)
        scores = self.actor_rollout_wg.compute_repro_rewards(batch.to_tensordict())
        return old_log_prob.union(DataProto.from_tensordict(scores.select(*OUTPUT_KEYS))), mfu

    def _update_actor(self, batch: DataProto):
        if not batch.meta_info.get("repro_added", False):
            _add_configured_process_advantages(batch, self.config)
            batch.meta_info["repro_added"] = True
        return super()._update_actor(batch)
