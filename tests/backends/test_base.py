"""`repro_fast.backends.base`: both backends implement the `Backend` protocol (its attributes, and
its methods with the protocol's parameters), `build_backend` builds the one named, and each keeps
the protocol's contract on its own: `groups` puts every trajectory in exactly one micro-batch,
`response_pass` gives every response token's log-prob and entropy in group order, and
`mean_answer_logprobs` gives ``J(P_j)`` (SPEC §2: the mean answer log-prob after ``[q, y[0..P_j)]``)
of every point back to back, each checked against the model's own forward."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from repro_fast.backends import BACKENDS, Backend, FastBackend, Item, NaiveBackend, build_backend
from repro_fast.model import ModelAdapter, ResponsePass

TEMPERATURE = 0.8


def _members(cls) -> tuple[set[str], dict[str, inspect.Signature]]:
    attributes = set(getattr(cls, "__annotations__", {}))
    methods = {name: inspect.signature(fn) for name, fn in vars(cls).items()
               if inspect.isfunction(fn) and not name.startswith("_")}
    return attributes, methods


@pytest.mark.parametrize("name, cls", [("naive", NaiveBackend), ("fast", FastBackend)])
def test_backends_implement_the_protocol(tiny_llama, name, cls):
    attributes, methods = _members(Backend)
    assert attributes == {"name", "adapter", "token_budget"}
    assert set(methods) == {"groups", "response_pass", "mean_answer_logprobs"}
    backend = build_backend(name, ModelAdapter(tiny_llama, TEMPERATURE), 4096, "torch")
    assert type(backend) is cls and backend.name == name and name in BACKENDS
    assert backend.token_budget == 4096 and backend.adapter.temperature == TEMPERATURE
    for method, signature in methods.items():
        own = inspect.signature(getattr(cls, method))
        assert list(own.parameters) == list(signature.parameters), (name, method)


def _items(rng):
    """Prompts and responses of assorted lengths (one empty response), one answer of one token."""
    shapes = [(3, 9), (1, 0), (6, 4), (2, 12), (4, 1)]
    answers = [[27, 28, 29], [30], [31, 32], [33, 34, 35, 36], [37, 38]]
    return [Item(rng.integers(100, 5000, q), rng.integers(100, 5000, n), np.array(a, dtype=np.int64))
            for (q, n), a in zip(shapes, answers)]


def _points(item, rng):
    """0, a few distinct prefix lengths in [1, n), then n (none after 0 for an empty response)."""
    n = len(item.response)
    inner = (
        sorted(rng.choice(np.arange(1, n), size=min(2, max(n - 1, 0)), replace=False).tolist())
        if n > 1
        else []
    )
    return [0, *inner] + ([n] if n else [])


def _own_j(model, item, p):
    """SPEC §2 J(p) from the model's own forward over the real sequence [q, y[0..p), a]."""
    seq = np.concatenate([item.prompt, item.response[:p], item.answer])
    with torch.no_grad():
        logits = model(torch.from_numpy(seq)[None]).logits[0].double() / TEMPERATURE
    start = len(item.prompt) + p
    logp = torch.log_softmax(logits[start - 1 : start - 1 + len(item.answer)], -1)
    return float(logp.gather(1, torch.from_numpy(item.answer)[:, None]).mean())


@pytest.mark.parametrize("name", ["naive", "fast"])
@pytest.mark.parametrize("budget", [16, 4096])  # many micro-batches, or one
def test_backend_contract_against_the_models_own_forward(tiny_llama, name, budget):
    rng = np.random.default_rng(0)
    items = _items(rng)
    points = [_points(it, rng) for it in items]
    counts = [len(p) for p in points]
    backend = build_backend(name, ModelAdapter(tiny_llama, TEMPERATURE), budget, "torch")
    groups = backend.groups(items, counts)
    assert sorted(b for g in groups for b in g) == list(range(len(items))), "each trajectory exactly once"
    seen = {}
    with torch.no_grad():
        for group in groups:
            phase1 = backend.response_pass(items, group)
            assert isinstance(phase1, ResponsePass)
            assert (
                phase1.logprobs.numel()
                == phase1.entropies.numel()
                == sum(len(items[b].response) for b in group)
            )
            stats = zip(phase1.logprobs.split([len(items[b].response) for b in group]),
                        phase1.entropies.split([len(items[b].response) for b in group]))
            for b, (lp, ent) in zip(group, stats):
                own = ModelAdapter(tiny_llama, TEMPERATURE).response_pass(
                    [items[b].prompt], [items[b].response]
                )
                torch.testing.assert_close(lp, own.logprobs, atol=1e-5, rtol=0)
                torch.testing.assert_close(ent, own.entropies, atol=1e-5, rtol=0)
            packed = torch.tensor([p for b in group for p in points[b]], dtype=torch.long)
            values = backend.mean_answer_logprobs(items, group, packed, [counts[b] for b in group], phase1)
            assert values.shape == (packed.numel(),)
            for b, v in zip(group, values.split([counts[b] for b in group])):
                seen[b] = v.double().tolist()
    for b, item in enumerate(items):
        assert seen[b] == pytest.approx([_own_j(tiny_llama, item, p) for p in points[b]], abs=1e-4), b
