"""`repro_fast.integrations.verl` against verl 0.9.1 itself (the tests marked verl run in .venv-verl:
.ci/verl_tests.sh; without verl the module names what to install).

Everything here runs on CPU: converters, log-probs against verl's own log-prob function, the
trainer-side step against verl's GRPO, GAE (PPO with a critic) and REINFORCE++ estimators, the built-in
trainer's estimators (repro_fast.grpo.estimators) against verl's, the worker-side step (plain, FSDP2 and FSDP1
sharded over two gloo ranks) and both steps inside Ray. No GPU, no rollout engine, no trainer
``fit`` loop (verl's FSDP engines register for cuda/npu only).
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
from conftest import make_tiny_model

from repro_fast import RePROConfig, RePROScorer

try:
    from tensordict import TensorDict
    from verl import DataProto

    from repro_fast.integrations import verl as rv

    _MISSING = None
except ImportError as e:  # the main venv collects this file and deselects it (-m 'not verl')
    TensorDict = DataProto = rv = None
    _MISSING = e


@pytest.fixture(autouse=True)
def _verl_installed(request):
    # a verl test selected without verl: fail, never skip (the rest of this file runs without verl)
    if _MISSING is not None and request.node.get_closest_marker("verl"):
        pytest.fail(f"verl tests need .venv-verl (.ci/verl_tests.sh): {_MISSING}")


# tests/: conftest and this package, importable by the Ray workers
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSWERS = ["7", "7", "7", "12", "12", "5"]
UIDS = ["a", "a", "a", "b", "b", "c"]  # "c" is a group of one
TEXTS = [
    ("Q: 3 + 4?\n", "Let me think.\n\nWe add 3 and 4.\n\nThat is 7.\n\n</think>\\boxed{7}"),
    ("Q: 3 + 4?\n", "Hmm.\n\nIt is 8.\n\nNo wait.\n\nIt is 7."),
    ("Q: 3 + 4?\n", "7"),
    ("Q: 6 + 6, quickly?\n", "Six plus six.\n\nTwelve.\n\nCheck: 6 + 6 = 12.\n\n</think>12"),
    ("Q: 6 + 6, quickly?\n", "Let me see.\n\n13?\n\n"),
    ("Q: 2 + 3?\n", "Two and three.\n\nFive.\n\n"),
]
CONFIG = RePROConfig(num_segments=3)


def _dense_batch(tok, pad_to: int = 0) -> DataProto:
    """A verl legacy/DataProto rollout batch: left-padded prompts, right-padded responses."""
    prompts = [tok.encode(p) for p, _ in TEXTS]
    responses = [tok.encode(r) for _, r in TEXTS]
    lq = max(map(len, prompts))
    lc = max(max(map(len, responses)), pad_to)
    n, pad = len(TEXTS), tok.eos_token_id
    p_ids = torch.full((n, lq), pad)
    r_ids = torch.full((n, lc), pad)
    attn = torch.zeros(n, lq + lc, dtype=torch.long)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        p_ids[b, lq - len(p):] = torch.tensor(p)
        r_ids[b, : len(r)] = torch.tensor(r)
        attn[b, lq - len(p): lq + len(r)] = 1
    input_ids = torch.cat([p_ids, r_ids], 1)
    position_ids = (attn.cumsum(1) - 1).clamp_min(0)
    return DataProto.from_dict(
        tensors=dict(prompts=p_ids, responses=r_ids, input_ids=input_ids, attention_mask=attn,
                     position_ids=position_ids, response_mask=attn[:, lq:].clone()),
        non_tensors=dict(uid=np.array(UIDS, dtype=object),
                         reward_model=np.array([{"ground_truth": a} for a in ANSWERS], dtype=object)),
    )


def _nested_batch(tok, rows=None) -> TensorDict:
    """The v1 trainer's TransferQueue layout: jagged prompts, responses and response_mask (of ``rows``,
    default all)."""
    rows = range(len(TEXTS)) if rows is None else rows
    prompts = [torch.tensor(tok.encode(TEXTS[b][0])) for b in rows]
    responses = [torch.tensor(tok.encode(TEXTS[b][1])) for b in rows]
    nest = lambda xs: torch.nested.as_nested_tensor(xs, layout=torch.jagged)  # noqa: E731
    td = TensorDict(
        dict(
            prompts=nest(prompts),
            responses=nest(responses),
            response_mask=nest([torch.ones_like(r) for r in responses]),
        ),
        batch_size=[len(prompts)],
    )
    td["uid"] = [UIDS[b] for b in rows]  # NonTensorStack, like DataProto.to_tensordict
    td["reward_model"] = [{"ground_truth": ANSWERS[b]} for b in rows]
    return td


@pytest.fixture(scope="module")
def model():
    return make_tiny_model("qwen2", seed=3)


@pytest.fixture(scope="module")
def scorer(model, gpt2_tokenizer):
    return RePROScorer(model, gpt2_tokenizer, CONFIG)


def _reference(scorer, tok):
    """``score()`` on the token-id lists of the whole batch, with the groups: the answer every
    verl path must reproduce."""
    return scorer.score(
        [tok.encode(p) for p, _ in TEXTS], [tok.encode(r) for _, r in TEXTS], ANSWERS, group_ids=UIDS
    )


# ------------------------------------------------------------------------------------------
# Converters
# ------------------------------------------------------------------------------------------


@pytest.mark.verl
def test_converters_round_trip_dense_and_nested(gpt2_tokenizer):
    dense = _dense_batch(gpt2_tokenizer, pad_to=40)
    for batch in (dense, dense.to_tensordict()):
        x = rv.scorer_inputs(batch)
        assert torch.equal(x["completion_ids"], dense.batch["responses"])
        back = rv.to_batch_layout(x["completion_ids"][:, :25] * x["completion_mask"][:, :25], batch)
        assert back.shape == dense.batch["responses"].shape
        assert torch.equal(back[:, :25], (dense.batch["responses"] * dense.batch["response_mask"])[:, :25])
        for b, (p, r) in enumerate(TEXTS):
            assert x["prompt_ids"][b][x["prompt_mask"][b].bool()].tolist() == gpt2_tokenizer.encode(p)
            assert x["completion_ids"][b][x["completion_mask"][b].bool()].tolist() == gpt2_tokenizer.encode(r)
    assert rv.answers_from_batch(dense) == ANSWERS == rv.answers_from_batch(dense.to_tensordict())
    assert rv.non_tensor_list(dense.to_tensordict(), "uid") == UIDS

    nested = _nested_batch(gpt2_tokenizer)
    x = rv.scorer_inputs(nested)
    back = rv.to_batch_layout(x["completion_ids"], nested)
    assert back.is_nested
    for b in range(len(TEXTS)):
        assert torch.equal(back[b], nested["responses"][b])
        assert x["prompt_ids"][b][x["prompt_mask"][b].bool()].tolist() == nested["prompts"][b].tolist()
    assert torch.equal(rv.to_dense(back), x["completion_ids"])
    assert rv.answers_from_batch(nested) == ANSWERS and rv.non_tensor_list(nested, "uid") == UIDS


@pytest.mark.verl
def test_converter_errors_name_the_argument(gpt2_tokenizer):
    with pytest.raises(TypeError, match="batch: expected a verl DataProto or a TensorDict"):
        rv.scorer_inputs({"prompts": 1})
    td = _dense_batch(gpt2_tokenizer).to_tensordict()
    del td["attention_mask"]
    with pytest.raises(KeyError, match="'attention_mask'"):
        rv.scorer_inputs(td)
    with pytest.raises(ValueError, match=r"values: expected \[N=6, W\]"):
        rv.to_batch_layout(torch.zeros(5, 3), td)
    bad = _dense_batch(gpt2_tokenizer)
    bad.non_tensor_batch["reward_model"][2] = {"answer": "7"}
    with pytest.raises(
        ValueError, match=r"batch\['reward_model'\]\[2\]: expected a dict with a 'ground_truth'"
    ):
        rv.answers_from_batch(bad)


# ------------------------------------------------------------------------------------------
# Log-probs: the scorer's against verl's own path
# ------------------------------------------------------------------------------------------


@pytest.mark.verl
def test_logprobs_equal_verls_logprobs_from_logits(model, scorer, gpt2_tokenizer):
    from verl.utils.torch_functional import logprobs_from_logits

    batch = _dense_batch(gpt2_tokenizer, pad_to=40)
    out = rv.score_batch(scorer, batch)
    lq = batch.batch["prompts"].shape[1]
    with torch.no_grad():  # verl's dense actor path: padded forward, logits of the response slots
        logits = model(input_ids=batch.batch["input_ids"], attention_mask=batch.batch["attention_mask"],
                       position_ids=batch.batch["position_ids"]).logits.float()
    theirs = logprobs_from_logits(logits[:, lq - 1: -1], batch.batch["responses"])
    mask = batch.batch["response_mask"].bool()
    assert out[rv.LOGPROBS_KEY].shape == theirs.shape
    assert (out[rv.LOGPROBS_KEY][mask] - theirs[mask]).abs().max() < 1e-4
    assert (out[rv.LOGPROBS_KEY][~mask] == 0).all()


# ------------------------------------------------------------------------------------------
# Worker side + trainer side
# ------------------------------------------------------------------------------------------


def _outcome_rewards(batch: DataProto) -> torch.Tensor:
    """verl's reward manager: the scalar score on the last response token."""
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    lengths = batch.batch["response_mask"].sum(1)
    tl = torch.zeros_like(batch.batch["response_mask"], dtype=torch.float32)
    tl[torch.arange(len(r)), lengths - 1] = r
    return tl


def _grpo_by_hand(r: torch.Tensor) -> torch.Tensor:
    """verl's GRPO: (R - mean_g) / (std_g + 1e-6), unbiased std; a group of one: mean 0, std 1."""
    out = torch.empty_like(r)
    for g in set(UIDS):
        idx = [b for b, u in enumerate(UIDS) if u == g]
        x = r[idx]
        mu, sd = (x.mean(), x.std()) if len(idx) > 1 else (torch.tensor(0.0), torch.tensor(1.0))
        out[idx] = (x - mu) / (sd + 1e-6)
    return out


@pytest.mark.verl
@pytest.mark.parametrize("layout", ["dense", "nested"])
def test_worker_step_split_over_ranks_then_trainer_step(scorer, gpt2_tokenizer, layout):
    """Two 'DP ranks' score halves that split group 'a'; the driver's step on the whole batch
    equals verl's GRPO + alpha x SPEC §6 over whole groups, i.e. score() on the full batch."""
    from verl.trainer.ppo.core_algos import AdvantageEstimator

    ref = _reference(scorer, gpt2_tokenizer)
    dense = _dense_batch(gpt2_tokenizer)
    if layout == "dense":
        halves = [dense[:2], dense[2:]]
    else:
        halves = [
            _nested_batch(gpt2_tokenizer, range(2)),
            _nested_batch(gpt2_tokenizer, range(2, len(TEXTS))),
        ]
    outs = [rv.score_batch(scorer, h) for h in halves]
    scored = torch.cat(
        [rv.to_dense(o[k], dense.batch["responses"].shape[1]) for o in outs for k in [rv.REWARDS_KEY]]
    )
    mask = torch.cat([rv.to_dense(o[rv.MASK_KEY], dense.batch["responses"].shape[1]) for o in outs])
    if layout == "nested":
        assert outs[0][rv.REWARDS_KEY].is_nested
    assert torch.equal(mask.bool(), ref.reward_mask)
    assert (scored - ref.token_rewards).abs().max() < 1e-6

    data = dense
    data.batch[rv.REWARDS_KEY], data.batch[rv.MASK_KEY] = scored, mask
    data.batch["token_level_rewards"] = _outcome_rewards(data)
    alpha = 0.1
    rv.compute_advantage(data, alpha=alpha, adv_estimator=AdvantageEstimator.GRPO, config=None)

    outcome = _grpo_by_hand(data.batch["token_level_rewards"].sum(1))
    assert outcome[-1] == pytest.approx(1.0 / (1 + 1e-6))  # the singleton follows verl: mean 0, std 1
    m = data.batch["response_mask"].float()
    expected = (outcome[:, None] + alpha * ref.process_advantages) * m
    assert (data.batch["advantages"] - expected).abs().max() < 1e-4
    assert (ref.process_advantages.abs() > 1e-3).any()  # the process term is really there
    assert (data.batch["advantages"][~m.bool()] == 0).all()


@pytest.mark.verl
def test_trainer_step_normalizes_over_whole_groups_only(scorer, gpt2_tokenizer):
    """Scope matters: per-half normalization (what a worker could do) differs from the driver's."""
    data = _dense_batch(gpt2_tokenizer)
    data.batch.update(rv.score_batch(scorer, data))
    whole = rv.batch_process_advantages(data)
    halves = torch.cat([rv.batch_process_advantages(data[:2]), rv.batch_process_advantages(data[2:])])
    assert (whole - _reference(scorer, gpt2_tokenizer).process_advantages).abs().max() < 1e-4
    assert (whole - halves).abs().max() > 1e-2
    with pytest.raises(TypeError, match="alpha: expected a number"):
        rv.add_process_advantages(data, alpha="0.1")


def _algo_config(**kwargs):
    from verl.trainer.config.algorithm import AlgoConfig

    return AlgoConfig(**kwargs)


@pytest.mark.verl
@pytest.mark.parametrize("estimator", ["gae", "reinforce_plus_plus"])
def test_trainer_step_with_gae_and_reinforce_plus_plus(scorer, gpt2_tokenizer, estimator):
    """PPO with a critic (GAE) and REINFORCE++: the trainer step gives exactly verl's estimator on the
    batch + alpha x score()'s process advantages; verl's returns are left as they were."""
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.core_algos import AdvantageEstimator

    ref = _reference(scorer, gpt2_tokenizer)
    data = _dense_batch(gpt2_tokenizer)
    data.batch.update(rv.score_batch(scorer, data))
    mask = data.batch["response_mask"]
    g = torch.Generator().manual_seed(5)
    # verl's apply_kl_penalty (use_kl_in_reward) shapes the token rewards before any estimator sees them
    kl = torch.rand(mask.shape, generator=g) * 0.05
    data.batch["token_level_rewards"] = _outcome_rewards(data) - 0.1 * kl * mask
    gamma, lam, alpha = 0.99, 0.95, 0.1
    if estimator == "gae":
        data.batch["values"] = torch.randn(mask.shape, generator=g) * mask  # the critic's V(s_t)
        theirs, returns = core_algos.compute_gae_advantage_return(
            data.batch["token_level_rewards"], data.batch["values"], mask, gamma=gamma, lam=lam)
        kind = AdvantageEstimator.GAE
    else:
        theirs, returns = core_algos.compute_reinforce_plus_plus_outcome_advantage(
            data.batch["token_level_rewards"], mask, config=_algo_config(gamma=gamma))
        kind = AdvantageEstimator.REINFORCE_PLUS_PLUS
    rv.compute_advantage(data, alpha=alpha, adv_estimator=kind, gamma=gamma, lam=lam,
                         config=_algo_config(gamma=gamma, lam=lam, adv_estimator=estimator))
    expected = theirs + alpha * ref.process_advantages * mask
    assert (data.batch["advantages"] - expected).abs().max() < 1e-5
    assert torch.equal(data.batch["returns"], returns)
    assert (ref.process_advantages.abs() > 1e-3).any()  # the process term is really there
    assert (data.batch["advantages"] - theirs).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------
# The built-in trainer's estimators (repro_fast.grpo.estimators) against verl's core_algos
# ------------------------------------------------------------------------------------------


def _random_outcomes(group_size: int, groups: int = 3, width: int = 10):
    """Random rewards, uids, prefix masks (row 0 of length 1) and KL estimates, in float64."""
    g = torch.Generator().manual_seed(group_size)
    n = groups * group_size
    rewards = (torch.rand(n, generator=g) < 0.5).double() + 0.1 * torch.rand(n, generator=g).double()
    uids = np.array([f"p{b // group_size}" for b in range(n)], dtype=object)
    lengths = torch.randint(1, width + 1, (n,), generator=g)
    lengths[0] = 1
    mask = (torch.arange(width) < lengths[:, None]).double()
    kl = torch.rand(n, width, generator=g).double() * 0.1
    return rewards, uids, mask, kl


def _token_level(rewards, mask, kl=None, kl_coef=0.0):
    """verl's layout: the score on the last response token, minus kl_coef x KL on every token."""
    tl = torch.zeros_like(mask)
    tl[torch.arange(len(rewards)), mask.sum(1).long() - 1] = rewards
    return tl - (kl_coef * kl * mask if kl is not None else 0.0)


@pytest.mark.verl
@pytest.mark.parametrize("group_size", [1, 2, 8])
@pytest.mark.parametrize("kl_coef", [0.0, 0.2])
def test_reinforce_plus_plus_equals_verls(group_size, kl_coef):
    from verl.trainer.ppo import core_algos

    from repro_fast.grpo.estimators import reinforce_plus_plus_advantages

    rewards, _, mask, kl = _random_outcomes(group_size)
    for gamma in (1.0, 0.9):
        theirs, _ = core_algos.compute_reinforce_plus_plus_outcome_advantage(
            _token_level(rewards, mask, kl, kl_coef), mask, config=_algo_config(gamma=gamma))
        ours = reinforce_plus_plus_advantages(rewards, mask.bool(), kl, kl_coef, gamma)
        # verl's masked_mean divides by (token count + 1e-8): a relative 1e-8/count off the exact mean
        assert (ours - theirs).abs().max() < 1e-7


@pytest.mark.verl
@pytest.mark.parametrize("group_size", [1, 2, 8])
@pytest.mark.parametrize("estimator", ["rloo", "grpo"])
def test_rloo_and_grpo_equal_verls(group_size, estimator):
    """Equal for groups of 2 and more; a group of one has no baseline: ours gives 0 (as TRL, and as
    `repro_fast.advantages.grpo_advantages`), verl keeps R itself (baseline 0; GRPO: R / (1 + 1e-6))."""
    from verl.trainer.ppo import core_algos

    from repro_fast.grpo.estimators import advantages

    rewards, uids, mask, _ = _random_outcomes(group_size)
    fn = core_algos.compute_rloo_outcome_advantage if estimator == "rloo" else \
        core_algos.compute_grpo_outcome_advantage
    theirs, _ = fn(_token_level(rewards, mask), mask, index=uids)
    ours = advantages(estimator, rewards, list(uids), mask.bool(), alpha=0.0).double()
    if group_size > 1:
        assert (ours - theirs).abs().max() < 1e-6
    else:
        assert (ours == 0).all()
        assert (theirs - rewards[:, None] * mask).abs().max() < 1e-5


class _FakeEngine:
    def __init__(self, module, tok):
        self.module = module
        self.model_config = type("MC", (), {"tokenizer": tok})()

    def eval_mode(self):
        import contextlib

        return contextlib.nullcontext()


@pytest.mark.verl
def test_worker_mixin_on_a_synthetic_batch(model, scorer, gpt2_tokenizer):
    from omegaconf import OmegaConf

    worker = rv.RePROWorkerMixin()
    worker.actor = type("A", (), {"engine": _FakeEngine(model, gpt2_tokenizer)})()
    worker.config = OmegaConf.create({"repro": {"num_segments": 3, "alpha": 0.2, "backend": "fast"}})
    td = _dense_batch(gpt2_tokenizer).to_tensordict()
    out = worker.compute_repro_rewards(td)  # the registered method, called as a worker runs it
    assert worker._repro_scorer.config.num_segments == 3
    ref = _reference(scorer, gpt2_tokenizer)
    assert torch.equal(out[rv.MASK_KEY].bool(), ref.reward_mask)
    assert (out[rv.REWARDS_KEY] - ref.token_rewards).abs().max() < 1e-6


# ------------------------------------------------------------------------------------------
# FSDP: two gloo ranks on CPU, weights sharded for real
# ------------------------------------------------------------------------------------------


def _fsdp_rank(rank: int, world: int, port: int, tok_dir: str, kind: str, out_dir: str):
    import torch.distributed as dist
    from transformers import GPT2TokenizerFast

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        tok = GPT2TokenizerFast.from_pretrained(tok_dir)
        model = make_tiny_model("qwen2", seed=3)
        if kind == "fsdp2":
            from torch.distributed.fsdp import fully_shard

            for layer in model.model.layers:
                fully_shard(layer)
            fully_shard(model)
            scorer = RePROScorer(model, tok, CONFIG)  # built while sharded, as in the worker
        else:
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP1
            from torch.distributed.fsdp.wrap import ModuleWrapPolicy
            from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

            model = FSDP1(model, auto_wrap_policy=ModuleWrapPolicy({Qwen2DecoderLayer}),
                          device_id=torch.device("cpu"), use_orig_params=True)
            with rv.full_weights(model):
                scorer = RePROScorer(rv.hf_module(model), tok, CONFIG)
        sharded = [
            tuple(p.to_local().shape) if hasattr(p, "to_local") else tuple(p.shape)
            for p in model.parameters()
        ]
        batch = _dense_batch(tok)
        mine = batch[:3] if rank == 0 else batch[3:]  # DP dispatch: each rank its share
        outs = [rv.score_batch(scorer, mine, module=model) for _ in range(2)]  # twice: state restored
        after = [
            tuple(p.to_local().shape) if hasattr(p, "to_local") else tuple(p.shape)
            for p in model.parameters()
        ]
        torch.save(
            dict(out=outs[1].to_dict(), first=outs[0].to_dict(), same=sharded == after, sharded=sharded),
            os.path.join(out_dir, f"{kind}_{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.verl
@pytest.mark.parametrize("kind", ["fsdp2", "fsdp1"])
def test_worker_step_under_fsdp_two_ranks(kind, scorer, gpt2_tokenizer, gpt2_tokenizer_dir, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_fsdp_rank, args=(2, _free_port(), gpt2_tokenizer_dir, kind, str(tmp_path)), nprocs=2, join=True)
    ref = _reference(scorer, gpt2_tokenizer)
    parts = [torch.load(tmp_path / f"{kind}_{r}.pt") for r in range(2)]
    full = {p.shape for p in scorer.model.parameters()}
    if kind == "fsdp2":  # really sharded: local shards are smaller than the full parameters
        assert any(s not in full for s in map(torch.Size, parts[0]["sharded"]))
    for part in parts:
        assert part["same"], "parameters did not return to their sharded state"
        assert torch.equal(part["out"][rv.REWARDS_KEY], part["first"][rv.REWARDS_KEY])
    rewards = torch.cat([p["out"][rv.REWARDS_KEY] for p in parts])
    logprobs = torch.cat([p["out"][rv.LOGPROBS_KEY] for p in parts])
    width = ref.token_rewards.shape[1]
    assert (rewards[:, :width] - ref.token_rewards).abs().max() < 1e-5
    assert (logprobs[:, :width] - ref.token_logprobs).abs().max() < 1e-5


# ------------------------------------------------------------------------------------------
# Ray: the worker step in a Ray actor, the trainer step on the driver
# ------------------------------------------------------------------------------------------


@pytest.mark.verl
def test_ray_worker_and_driver_steps(scorer, gpt2_tokenizer, gpt2_tokenizer_dir):
    import ray
    from verl.trainer.ppo.core_algos import AdvantageEstimator

    @ray.remote(num_cpus=1)
    class Scorer:
        def __init__(self, tok_dir):
            from transformers import GPT2TokenizerFast

            self.scorer = RePROScorer(
                make_tiny_model("qwen2", seed=3), GPT2TokenizerFast.from_pretrained(tok_dir), CONFIG
            )

        def score(self, batch: DataProto) -> TensorDict:
            return rv.score_batch(self.scorer, batch)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([TESTS, os.getcwd()])}})
    try:
        batch = _dense_batch(gpt2_tokenizer)
        actors = [Scorer.remote(gpt2_tokenizer_dir) for _ in range(2)]
        shards = batch.chunk(2)
        outs = ray.get([a.score.remote(s) for a, s in zip(actors, shards)])
    finally:
        ray.shutdown()
    batch.batch.update(torch.cat(outs))
    batch.batch["token_level_rewards"] = _outcome_rewards(batch)
    rv.compute_advantage(batch, alpha=0.1, adv_estimator=AdvantageEstimator.GRPO, config=None)
    ref = _reference(scorer, gpt2_tokenizer)
    outcome = _grpo_by_hand(batch.batch["token_level_rewards"].sum(1))
    expected = (outcome[:, None] + 0.1 * ref.process_advantages) * batch.batch["response_mask"]
    assert (batch.batch["advantages"] - expected).abs().max() < 1e-4


@pytest.mark.verl
def test_mixins_compose_with_verls_classes():
    """The wiring of examples/verl: the worker method is registered for verl's dispatch, and the
    trainer overrides sit in front of verl's own methods."""
    from verl.single_controller.base.decorator import MAGIC_ATTR
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer
    from verl.workers.engine_workers import ActorRolloutRefWorker

    class Worker(rv.RePROWorkerMixin, ActorRolloutRefWorker):
        pass

    mine = getattr(Worker.compute_repro_rewards, MAGIC_ATTR)["dispatch_mode"]
    theirs = getattr(ActorRolloutRefWorker.compute_log_prob, MAGIC_ATTR)["dispatch_mode"]
    assert mine["dispatch_fn"].args == theirs["dispatch_fn"].args == ("actor",)
    assert mine["collect_fn"].func is theirs["collect_fn"].func
    for mixin, base, names in (
        (rv.RePROTrainerMixin, PPOTrainer, ("_compute_old_log_prob", "_compute_advantage")),
        (rv.RePROLegacyTrainerMixin, RayPPOTrainer, ("_compute_old_log_prob", "_update_actor")),
    ):
        cls = type("T", (mixin, base), {})
        for name in names:
            assert getattr(cls, name) is getattr(mixin, name) and callable(getattr(base, name))


def test_verl_integration_without_verl_names_what_to_install(monkeypatch):
    """Fault: importing it without verl said only "No module named 'tensordict'"."""
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "tensordict", None)  # as if not installed, in any venv
    monkeypatch.delitem(sys.modules, "repro_fast.integrations.verl", raising=False)
    with pytest.raises(ImportError, match="pip install 'verl==0.9.1'"):
        importlib.import_module("repro_fast.integrations.verl")
