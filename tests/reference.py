"""A plain, slow, float64 reference of SPEC §1-6, written from the SPEC text alone.

Nothing here imports the package under test (except nothing at all): every quantity is
computed the obvious way so that a reader can check it line by line against the SPEC.

- Think end (§1): decode every prefix of the response; ``F`` = the smallest ``j`` whose text
  contains the marker, ``E`` = the token in which that (first) occurrence begins.
- Segment starts (§3): decode every prefix (O(n^2) decodes) and every single token.
- Entropies / log-probs (§4): one Hugging Face forward over the real sequence ``[q, y]`` of a
  float64 deep copy of the model (a causal model's output at position ``t`` depends only on the
  first ``t + 1`` inputs, so this is the input ``[q, y[0..i)]`` of the SPEC).
- ``J(f)`` (§2): one Hugging Face forward per scored prefix over the real, unpadded sequence
  ``[q, y[0..f), a]`` with position ids ``0, 1, ...``.
- Scores, rewards, placement, normalization, reward-to-go (§5-6) by explicit Python loops over
  Python floats (float64), Kendall tau-a by the double sum.

The authors'-code switches (SPEC §8) are implemented too: ``answer_add_special_tokens``,
``boundary_mode="token_id"``, ``think_end_mode="token_id"`` (first id of the marker),
``stability_form="authors_code"`` (their ``mono = tau_j + 1/2``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

# ------------------------------------------------------------------------------------------
# Configuration: the SPEC §7 defaults written out here; from a package config only the fields a
# test overrode (value != that field's declared default) are taken, so a package default that
# drifted from the SPEC makes the package and this reference disagree.
# ------------------------------------------------------------------------------------------


@dataclass
class RefConfig:
    num_segments: int = 20
    stability_weight: float = 0.1
    alpha: float = 0.1
    ema_decay: float = 0.99
    temperature: float = 1.0
    normalize: str = "group"
    answer_template: str = "\\boxed{{{answer}}}"
    think_end: str | None = "</think>"
    boundary_suffixes: tuple = ("\n\n", ".\n", "?\n")
    answer_add_special_tokens: bool = False
    boundary_mode: str = "text"
    think_end_mode: str = "text"
    stability_form: str = "paper"


def ref_config(cfg: Any = None) -> RefConfig:
    """A RefConfig with the same field values as ``cfg`` (any object with those attributes)."""
    out = RefConfig()
    if cfg is None:
        return out
    import dataclasses

    for f in dataclasses.fields(cfg):
        if f.name in RefConfig.__dataclass_fields__ and getattr(cfg, f.name) != f.default:
            setattr(out, f.name, getattr(cfg, f.name))
    out.boundary_suffixes = tuple(out.boundary_suffixes)
    return out


# ------------------------------------------------------------------------------------------
# §1 text helpers
# ------------------------------------------------------------------------------------------


def text_of(tokenizer, ids: Sequence[int]) -> str:
    """SPEC §1: the text of token ids."""
    return tokenizer.decode(
        list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
    )


def answer_ids(tokenizer, answer: str, cfg: RefConfig) -> list[int]:
    text = cfg.answer_template.format(answer=answer)
    ids = list(tokenizer.encode(text, add_special_tokens=cfg.answer_add_special_tokens))
    if len(ids) < 1:
        raise ValueError("answer encodes to zero tokens")
    return ids


def think_bounds_text(tokenizer, y: Sequence[int], marker: str | None) -> tuple[int, int]:
    """SPEC §1, literally: decode prefixes.

    F = smallest j such that text(y[0..j)) contains the marker. Since text(y[0..F-1)) does not
    contain it, the first occurrence is the one completed by token F-1. E = the token in which
    that occurrence begins = the largest i < F such that text(y[i..F)) still contains the marker
    (the occurrence lies inside tokens i..F-1 but not inside i+1..F-1).
    """
    n = len(y)
    if marker is None or marker not in text_of(tokenizer, y):
        return n, n
    F = next(j for j in range(0, n + 1) if marker in text_of(tokenizer, y[:j]))
    E = max(i for i in range(0, F) if marker in text_of(tokenizer, y[i:F]))
    return E, F


def think_bounds_token_id(tokenizer, y: Sequence[int], marker: str | None) -> tuple[int, int]:
    """Authors' code: the first token id of the encoded marker (a fragment when the marker is
    several tokens); E = its first index, F = min(E + 1, n)."""
    n = len(y)
    if marker is None:
        return n, n
    ids = tokenizer.encode(marker, add_special_tokens=False)
    for i, t in enumerate(y):
        if t == ids[0]:
            return i, i + 1
    return n, n


def think_bounds(tokenizer, y, cfg: RefConfig) -> tuple[int, int]:
    if cfg.think_end_mode == "token_id":
        return think_bounds_token_id(tokenizer, y, cfg.think_end)
    return think_bounds_text(tokenizer, y, cfg.think_end)


# ------------------------------------------------------------------------------------------
# §3 segment starts
# ------------------------------------------------------------------------------------------


def segment_starts_text(tokenizer, y: Sequence[int], E: int, suffixes) -> list[int]:
    """SPEC §3: 1 <= i < E, text(y[0..i)) ends with a suffix, text(y[i]) not whitespace-only
    (``decode([y[i]]).strip() == ""`` counts as blank, the empty text too)."""
    out = []
    for i in range(1, E):
        prefix = text_of(tokenizer, y[:i])
        if not any(prefix.endswith(s) for s in suffixes):
            continue
        if text_of(tokenizer, [y[i]]).strip() == "":
            continue
        out.append(i)
    return out


def segment_starts_token_id(tokenizer, y: Sequence[int], E: int, suffixes) -> list[int]:
    """Authors' code: i is a start iff 1 <= i < E and y[i-1] is the first id of a suffix."""
    firsts = {tokenizer.encode(s, add_special_tokens=False)[0] for s in suffixes}
    return [i for i in range(1, E) if y[i - 1] in firsts]


def segment_starts(tokenizer, y, E, cfg: RefConfig) -> list[int]:
    if cfg.boundary_mode == "token_id":
        return segment_starts_token_id(tokenizer, y, E, cfg.boundary_suffixes)
    return segment_starts_text(tokenizer, y, E, cfg.boundary_suffixes)


def plan(tokenizer, y: Sequence[int], cfg: Any = None) -> tuple[int, int, list[int]]:
    """SPEC §1 and §3 of one response: ``(E, F, segment starts)``. ``cfg``: a RefConfig, or any
    config with the same fields (a package `RePROConfig`), mapped through `ref_config`."""
    if not isinstance(cfg, RefConfig):
        cfg = ref_config(cfg)
    y = [int(t) for t in y]
    E, F = think_bounds(tokenizer, y, cfg)
    return E, F, segment_starts(tokenizer, y, E, cfg)


# ------------------------------------------------------------------------------------------
# §4 selection
# ------------------------------------------------------------------------------------------


def select_points(candidates: Sequence[int], entropies: Sequence[float], k: int, F: int) -> list[int]:
    """Top-k candidates by entropy, ties to the smaller index; P = sorted unique {0} ∪ sel ∪ {F}."""
    ranked = sorted(candidates, key=lambda i: (-entropies[i], i))
    selected = ranked[:k]
    return sorted(set([0]) | set(selected) | set([F]))


def selection_margin(candidates, entropies, k) -> float:
    """Gap between the k-th and the (k+1)-th entropy among candidates (inf when no boundary).

    A gap below fp32 noise means an fp32 implementation may legitimately pick another point;
    tests use it to make sure a test case is well conditioned (exact ties are fine: the tie rule
    decides them, and the tests that need exact ties build them exactly).
    """
    if len(candidates) <= k:
        return math.inf
    hs = sorted((entropies[i] for i in candidates), reverse=True)
    return hs[k - 1] - hs[k]


# ------------------------------------------------------------------------------------------
# §5 scores and rewards (pure Python floats)
# ------------------------------------------------------------------------------------------


def kendall_tau_a(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Kendall tau-a by the double sum: Σ_{a<b} sign(x_b - x_a)·sign(y_b - y_a) / (n(n-1)/2)."""
    n = len(xs)
    pairs = n * (n - 1) // 2
    s = 0
    for a in range(n):
        for b in range(a + 1, n):
            dx = (xs[b] > xs[a]) - (xs[b] < xs[a])
            dy = (ys[b] > ys[a]) - (ys[b] < ys[a])
            s += dx * dy
    return s / pairs


def scores_from_nll(
    nll: Sequence[float], w: float, d: float, stability_form: str = "paper"
) -> dict[str, list[float]]:
    """SPEC §5 for j = 1..m given NLL_0..NLL_m."""
    nll = [float(x) for x in nll]
    m = len(nll) - 1
    ema = [nll[0]]
    for j in range(1, m + 1):
        ema.append(d * ema[-1] + (1.0 - d) * nll[j])
    s_magn, s_stab, score, taus = [], [], [], []
    for j in range(1, m + 1):
        magn = 1.0 - math.tanh(nll[j] / (nll[0] + 1e-6))
        # tau_j between (0..j) and (-e_0..-e_j), by the SPEC's own double sum
        num = 0
        for a in range(0, j + 1):
            for b in range(a + 1, j + 1):
                diff = ema[a] - ema[b]
                num += (diff > 0) - (diff < 0)
        tau = num / (j * (j + 1) / 2)
        if stability_form == "authors_code":
            stab = tau + 0.5  # their -tau_A + 1/2 with tau_A = -tau
        else:
            stab = (1.0 + tau) / 2.0
        s_magn.append(magn)
        s_stab.append(stab)
        taus.append(tau)
        score.append((1.0 - w) * magn + w * stab)
    rewards = [score[0]] + [score[j] - score[j - 1] for j in range(1, m)] if m else []
    return dict(ema=ema, tau=taus, s_magn=s_magn, s_stab=s_stab, score=score, rewards=rewards)


# ------------------------------------------------------------------------------------------
# §6 normalization and advantages
# ------------------------------------------------------------------------------------------


def normalize_rewards(
    rewards: Sequence[Sequence[float]], group_ids: Sequence[Any] | None, mode: str
) -> list[list[float]]:
    """r' = (r - mu) / (sigma + 1e-6), population std over the placed rewards in the scope."""
    N = len(rewards)
    if mode == "none":
        return [list(map(float, r)) for r in rewards]
    if mode == "batch":
        scope = [0] * N
    elif mode == "group":
        scope = list(range(N)) if group_ids is None else list(group_ids)
    else:
        raise ValueError(mode)
    out = [[0.0] * len(r) for r in rewards]
    for key in set(scope) if mode != "batch" else {0}:
        members = [b for b in range(N) if scope[b] == key]
        vals = [float(x) for b in members for x in rewards[b]]
        if not vals:
            continue
        mu = sum(vals) / len(vals)
        sigma = math.sqrt(sum((v - mu) ** 2 for v in vals) / len(vals))
        for b in members:
            out[b] = [(float(x) - mu) / (sigma + 1e-6) for x in rewards[b]]
    return out


def scope_sigmas(rewards, group_ids, mode) -> list[float]:
    """Population std of each trajectory's normalization scope (for conditioning checks)."""
    N = len(rewards)
    if mode == "none":
        return [math.inf] * N
    scope = [0] * N if mode == "batch" else (list(range(N)) if group_ids is None else list(group_ids))
    out = []
    for b in range(N):
        vals = [float(x) for c in range(N) if scope[c] == scope[b] for x in rewards[c]]
        if len(vals) == 0:
            out.append(math.inf)
            continue
        mu = sum(vals) / len(vals)
        out.append(math.sqrt(sum((v - mu) ** 2 for v in vals) / len(vals)))
    return out


def reward_to_go(n: int, points: Sequence[int], rewards_norm: Sequence[float]) -> list[float]:
    """Ã_t = Σ_{j : P_j - 1 >= t} r'_j for t in [0, n)."""
    adv = []
    for t in range(n):
        adv.append(sum(rewards_norm[j - 1] for j in range(1, len(points)) if points[j] - 1 >= t))
    return adv


def grpo_outcome(outcome: Sequence[float], group_ids: Sequence[Any]) -> list[float]:
    """A = (R - mean_g R) / (std_g R + 1e-6), std with ddof 1; 0 for a group of one."""
    out = []
    for b in range(len(outcome)):
        vals = [float(outcome[c]) for c in range(len(outcome)) if group_ids[c] == group_ids[b]]
        if len(vals) < 2:
            out.append(0.0)
            continue
        mu = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1))
        out.append((float(outcome[b]) - mu) / (sd + 1e-6))
    return out


def grpo_final(outcome, group_ids, process_adv_rows, alpha) -> list[list[float]]:
    """Â_t = A + alpha·Ã_t per response token (rows of real tokens only)."""
    A = grpo_outcome(outcome, group_ids)
    return [[A[b] + alpha * x for x in process_adv_rows[b]] for b in range(len(outcome))]


# ------------------------------------------------------------------------------------------
# §2 and §4 with the model (float64, Hugging Face forward on real unpadded sequences)
# ------------------------------------------------------------------------------------------


def float64_copy(model):
    """A float64 deep copy in eval mode, eager attention where available."""
    m = copy.deepcopy(model).double().eval()
    try:
        m.set_attn_implementation("eager")
    except Exception:  # pragma: no cover - older/other models
        pass
    return m


@torch.no_grad()
def _logits(model64, ids: Sequence[int], keep: int = 0) -> torch.Tensor:
    """Logits of the last ``keep`` positions (all when 0) of one real, unpadded sequence, from
    Hugging Face's own forward (``logits_to_keep`` only skips the LM head on other positions)."""
    x = torch.tensor([list(ids)], dtype=torch.long)
    pos = torch.arange(len(ids), dtype=torch.long)[None]
    out = model64(
        input_ids=x, position_ids=pos, attention_mask=torch.ones_like(x), use_cache=False,
        logits_to_keep=keep,
    )
    z = out.logits[0].to(torch.float64)
    assert keep == 0 or z.shape[0] == keep
    return z


@torch.no_grad()
def token_stats(model64, q, y, temperature) -> tuple[list[float], list[float]]:
    """Log-prob of y[t] and entropy H_t at the position predicting y[t] (input [q, y[0..t)])."""
    if len(y) == 0:
        return [], []
    # positions len(q)-1 .. len(q)+n-2 predict y[0..n): the last n+1 positions minus the final one
    z = _logits(model64, list(q) + list(y), keep=len(y) + 1)[: len(y)] / temperature
    logp = torch.log_softmax(z, dim=-1)
    ent = -(logp.exp() * logp).sum(-1)
    lp = logp[torch.arange(len(y)), torch.tensor(list(y))]
    return lp.tolist(), ent.tolist()


@torch.no_grad()
def objective_J(model64, q, y, f, a, temperature) -> float:
    """J(f) = (1/|a|) Σ_i log softmax(z_i/τ)[a_i], input [q, y[0..f), a] as one real sequence."""
    seq = list(q) + list(y[:f]) + list(a)
    # the last |a|+1 positions: position len(q)+f-1+i predicts a_i (i < |a|); the final one is unused
    z = _logits(model64, seq, keep=len(a) + 1)
    total = 0.0
    for i, ai in enumerate(a):
        logp = torch.log_softmax(z[i] / temperature, dim=-1)
        total += float(logp[ai])
    return total / len(a)


# ------------------------------------------------------------------------------------------
# The whole pipeline
# ------------------------------------------------------------------------------------------


@dataclass
class RefTrajectory:
    E: int
    F: int
    candidates: list[int]
    margin: float
    points: list[int]
    nll: list[float]
    s_magn: list[float]
    s_stab: list[float]
    score: list[float]
    rewards: list[float]
    rewards_norm: list[float] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    process_adv: list[float] = field(default_factory=list)


@dataclass
class RefResult:
    """Mirrors RePROResult; padded tensors are float64 here."""

    traj: list[RefTrajectory]
    points: list[list[int]]
    nll: list[torch.Tensor]
    s_magn: list[torch.Tensor]
    s_stab: list[torch.Tensor]
    score: list[torch.Tensor]
    rewards: list[torch.Tensor]
    token_rewards: torch.Tensor
    process_advantages: torch.Tensor
    token_logprobs: torch.Tensor
    token_entropies: torch.Tensor
    reward_mask: torch.Tensor
    response_mask: torch.Tensor
    sigmas: list[float]


def _ids(x) -> list[int]:
    if isinstance(x, torch.Tensor):
        return [int(v) for v in x.tolist()]
    return [int(v) for v in x]


def reference_score(
    model,
    tokenizer,
    prompts,
    responses,
    answers,
    group_ids=None,
    config=None,
    model64=None,
) -> RefResult:
    """SPEC §1-6 in float64. ``model64`` may be passed to reuse a float64 copy."""
    cfg = ref_config(config)
    if model64 is None:
        model64 = float64_copy(model)
    tau = float(cfg.temperature)
    trajs: list[RefTrajectory] = []
    for q, y, g in zip(prompts, responses, answers):
        q, y = _ids(q), _ids(y)
        a = answer_ids(tokenizer, g, cfg)
        E, F = think_bounds(tokenizer, y, cfg)
        cands = segment_starts(tokenizer, y, E, cfg)
        lp, ent = token_stats(model64, q, y, tau)
        if len(y) == 0:
            points = [0]
        else:
            points = select_points(cands, ent, cfg.num_segments, F)
        nll = [-objective_J(model64, q, y, f, a, tau) for f in points]
        sc = scores_from_nll(nll, cfg.stability_weight, cfg.ema_decay, cfg.stability_form)
        trajs.append(
            RefTrajectory(
                E=E,
                F=F,
                candidates=cands,
                margin=selection_margin(cands, ent, cfg.num_segments),
                points=points,
                nll=nll,
                s_magn=sc["s_magn"],
                s_stab=sc["s_stab"],
                score=sc["score"],
                rewards=sc["rewards"],
                logprobs=lp,
                entropies=ent,
            )
        )
    raw = [t.rewards for t in trajs]
    norm = normalize_rewards(raw, group_ids, cfg.normalize)
    sigmas = scope_sigmas(raw, group_ids, cfg.normalize)
    N = len(trajs)
    n_max = max([len(_ids(y)) for y in responses], default=0)
    shape = (N, n_max)
    token_rewards = torch.zeros(shape, dtype=torch.float64)
    proc = torch.zeros(shape, dtype=torch.float64)
    tlp = torch.zeros(shape, dtype=torch.float64)
    tent = torch.zeros(shape, dtype=torch.float64)
    rmask = torch.zeros(shape, dtype=torch.bool)
    ymask = torch.zeros(shape, dtype=torch.bool)
    for b, (t, y) in enumerate(zip(trajs, responses)):
        n = len(_ids(y))
        t.rewards_norm = norm[b]
        t.process_adv = reward_to_go(n, t.points, norm[b])
        for j in range(1, len(t.points)):
            token_rewards[b, t.points[j] - 1] = t.rewards[j - 1]
            rmask[b, t.points[j] - 1] = True
        if n:
            proc[b, :n] = torch.tensor(t.process_adv, dtype=torch.float64)
            tlp[b, :n] = torch.tensor(t.logprobs, dtype=torch.float64)
            tent[b, :n] = torch.tensor(t.entropies, dtype=torch.float64)
            ymask[b, :n] = True
    f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return RefResult(
        traj=trajs,
        points=[t.points for t in trajs],
        nll=[f64(t.nll) for t in trajs],
        s_magn=[f64(t.s_magn) for t in trajs],
        s_stab=[f64(t.s_stab) for t in trajs],
        score=[f64(t.score) for t in trajs],
        rewards=[f64(t.rewards) for t in trajs],
        token_rewards=token_rewards,
        process_advantages=proc,
        token_logprobs=tlp,
        token_entropies=tent,
        reward_mask=rmask,
        response_mask=ymask,
        sigmas=sigmas,
    )


# ------------------------------------------------------------------------------------------
# Comparison of two results (package vs reference, or fast vs naive)
# ------------------------------------------------------------------------------------------


def _f64(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    return torch.tensor(list(x), dtype=torch.float64)


def assert_results_close(actual, expected, atol: float = 1e-4, adv_atol: float = 1e-3, label: str = ""):
    """Every field of a RePROResult-like ``actual`` against ``expected`` (SPEC §7 tolerances).

    Points and masks must be identical; per-trajectory curves within ``atol``; padded token
    tensors within ``atol`` (process advantages within ``adv_atol``) and exactly 0 / False in the
    padding.
    """
    N = len(expected.points)
    assert len(actual.points) == N, f"{label}: {len(actual.points)} trajectories, expected {N}"
    for b in range(N):
        got_p = [int(p) for p in actual.points[b]]
        assert got_p == list(expected.points[b]), f"{label}: points[{b}] {got_p} != {expected.points[b]}"
        m = len(expected.points[b]) - 1
        for name, size in (("nll", m + 1), ("s_magn", m), ("s_stab", m), ("score", m), ("rewards", m)):
            got = getattr(actual, name)[b]
            assert isinstance(got, torch.Tensor) and got.is_floating_point(), (
                f"{label}: {name}[{b}] is not a float tensor"
            )
            assert tuple(got.shape) == (size,), f"{label}: {name}[{b}] shape {tuple(got.shape)} != ({size},)"
            torch.testing.assert_close(
                _f64(got), _f64(getattr(expected, name)[b]), atol=atol, rtol=0,
                msg=lambda s, name=name, b=b: f"{label}: {name}[{b}]: {s}",
            )
    shape = tuple(expected.response_mask.shape)
    for name in ("response_mask", "reward_mask"):
        got = getattr(actual, name)
        assert got.dtype == torch.bool, f"{label}: {name} dtype {got.dtype}"
        assert tuple(got.shape) == shape, f"{label}: {name} shape {tuple(got.shape)} != {shape}"
        assert torch.equal(got.cpu(), getattr(expected, name).cpu()), f"{label}: {name} differs"
    pad = ~expected.response_mask.cpu()
    for name, tol in (
        ("token_logprobs", atol),
        ("token_entropies", atol),
        ("token_rewards", atol),
        ("process_advantages", adv_atol),
    ):
        got = getattr(actual, name)
        assert tuple(got.shape) == shape, f"{label}: {name} shape {tuple(got.shape)} != {shape}"
        assert got.dtype == torch.float32, f"{label}: {name} dtype {got.dtype} (SPEC §7: float32)"
        torch.testing.assert_close(
            _f64(got), _f64(getattr(expected, name)), atol=tol, rtol=0,
            msg=lambda s, name=name: f"{label}: {name}: {s}",
        )
        assert torch.all(_f64(got)[pad] == 0), f"{label}: {name} not 0 in the padding"
