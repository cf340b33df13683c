"""`repro_fast.phase1`: the recorders (`record_forward`, `record_generation`) against the model's
own forward and ``generate()``; the checks a record passes before it is used (`UnusableRecord`);
the scorer's caller-visible state after scoring a record. The scores from records are compared with
`score_padded` in tests/test_scorer.py."""

from __future__ import annotations

import torch

from repro_fast import RePROConfig
from repro_fast.model import ModelAdapter
from repro_fast.phase1 import record_forward, record_generation

Q = [15496, 995, 30]  # "Hello world?" in GPT-2's BPE
Y = [64, 13, 628, 65, 269, 628, 67, 304, 13, 628, 69]  # three segments


def test_capture_records_the_trainers_own_forward(tiny_llama):
    """`record_forward` records the decoder's last hidden states and a KV cache (turned on even when the
    trainer's forward asked for none), and removes its hooks afterwards."""
    adapter = ModelAdapter(tiny_llama, 1.0)
    ids = torch.tensor([Q + Y])
    with torch.no_grad(), record_forward(adapter, RePROConfig()) as record:
        tiny_llama(input_ids=ids, use_cache=False)
    assert record.calls == 1 and record.cache is not None
    with torch.no_grad():
        hidden, _ = adapter.run_decoder(ids, torch.ones_like(ids), torch.arange(ids.shape[1])[None])
    torch.testing.assert_close(record.hidden, hidden, atol=1e-6, rtol=0)
    with torch.no_grad():
        tiny_llama(input_ids=ids)
    assert record.calls == 1, "the hooks outlived the block"


def test_capture_generation_records_every_step_of_generate(tiny_llama):
    """`record_generation` keeps one call per decoder step of ``generate()`` (the prefill, then one
    per sampled column but the last); joined, they are one forward over the fed columns; the hooks
    are gone after the block, and a second generate in one block marks the record broken."""
    adapter = ModelAdapter(tiny_llama, 1.0)
    ids = torch.tensor([Q])
    with torch.no_grad(), record_generation(adapter, RePROConfig()) as record:
        out = tiny_llama.generate(input_ids=ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert out.shape[1] == len(Q) + 5
    assert record.calls == 5 and record.columns_fed == len(Q) + 4 and record.broken is None
    fed, hidden, _ = record.joined()
    assert torch.equal(fed, out[:, :-1])  # the last sampled token is never fed
    with torch.no_grad():
        full, _ = adapter.run_decoder(fed, torch.ones_like(fed), torch.arange(fed.shape[1])[None])
    torch.testing.assert_close(hidden, full, atol=1e-5, rtol=0)
    assert record.cache.get_seq_length() == fed.shape[1]
    # The sampling logits, one set per sampled column: log p(y_t) of the fed ones, H_t of all.
    assert len(record.entropies) == 5 and len(record.logprobs) == 4
    with torch.no_grad():
        logp = torch.log_softmax(tiny_llama(input_ids=out).logits[0, len(Q) - 1: -1].float(), -1)
    sampled = out[0, len(Q):]
    torch.testing.assert_close(torch.cat(record.logprobs), logp[:4].gather(1, sampled[:4, None])[:, 0],
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat(record.entropies), -(logp.exp() * logp).sum(-1), atol=1e-5, rtol=0)
    with torch.no_grad():
        tiny_llama(input_ids=ids)
    assert record.calls == 5, "the hooks outlived the block"
    with torch.no_grad(), record_generation(adapter, RePROConfig()) as twice:
        for _ in range(2):
            tiny_llama.generate(input_ids=ids, max_new_tokens=2, do_sample=False, pad_token_id=0)
    assert twice.broken is not None and "more than one generation" in twice.broken
