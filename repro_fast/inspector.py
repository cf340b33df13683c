"""`repro-fast inspect`: which segments of a chain of thought RePro rewards or punishes, and why. One
self-contained HTML page (no scripts or network resources, all text escaped): per trajectory the CoT
coloured by each segment's normalized reward ``r'`` (SPEC §6, the trajectory as its group), the points
``P_j``, the curve ``J(P_j)`` as inline SVG, and per segment J, S_magn, S_stab, S, r, r'."""

from __future__ import annotations

import json
import os
from html import escape
from pathlib import Path

from repro_fast.config import RePROConfig
from repro_fast.grpo.config import ConfigError
from repro_fast.rewards import normalize_rewards
from repro_fast.scorer import RePROScorer

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222}
section{border-top:2px solid #ccc;margin-top:28px;padding-top:8px}
.cot{white-space:pre-wrap;font-family:ui-monospace,monospace;border:1px solid #ddd;padding:10px;line-height:1.9}
.pt{font-size:10px;font-weight:bold;color:#fff;background:#334;border-radius:3px;padding:0 3px;margin:0 2px}
.tail{color:#999}table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f4f4f4}.legend span{padding:2px 8px;margin-right:4px}pre{white-space:pre-wrap;background:#f7f7f7;padding:8px}"""


def colour(z: float) -> str:
    """Background for a normalized reward: green above 0, red below, opaque at |z| >= 2."""
    a = min(abs(z) / 2, 1.0) * 0.75
    return f"rgba(0,170,60,{a:.2f})" if z >= 0 else f"rgba(230,40,40,{a:.2f})"


def normalized(rewards: list[float]) -> list[float]:
    """SPEC §6 with the trajectory as its group (the package's own normalization)."""
    import torch

    return normalize_rewards([torch.tensor(rewards, dtype=torch.float64)], "group", None)[0].tolist()


def read_rows(path: str) -> list[dict]:
    """JSON lines with text fields ``prompt``, ``response``, ``answer``; errors name the line."""
    if not os.path.isfile(path):
        raise ConfigError(f"input: file {path!r} does not exist")
    rows = []
    with open(path, encoding="utf-8") as fp:
        for i, line in enumerate(fp, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"input: line {i} of {path!r} is not JSON: {exc}") from None
            for key in ("prompt", "response", "answer"):
                if not isinstance(row, dict) or not isinstance(row.get(key), str):
                    raise ConfigError(f"input: line {i} of {path!r} needs a text field {key!r}")
            rows.append(row)
    if not rows:
        raise ConfigError(f"input: {path!r} holds no rows")
    return rows


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """A user turn through the tokenizer's chat template (the plain text when it has none)."""
    if getattr(tokenizer, "chat_template", None):
        return list(tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                  tokenize=True, return_dict=False))
    return tokenizer.encode(prompt, add_special_tokens=False)


def _svg(points: list[int], j: list[float], n: int, w: int = 640, h: int = 180, pad: int = 40) -> str:
    lo, hi = min(j), max(j)
    span = (hi - lo) or 1.0
    xy = [(pad + (w - 2 * pad) * p / max(n, 1), pad / 2 + (h - pad) * (hi - v) / span) for p, v in zip(points, j)]
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#334"><title>P_{i} = {p}: J = {v:.4f}</title>'
                   f'</circle><text x="{x:.1f}" y="{y - 7:.1f}" font-size="9" text-anchor="middle">{i}</text>'
                   for i, ((x, y), p, v) in enumerate(zip(xy, points, j)))
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    return (f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="J over the points">'
            f'<rect width="{w}" height="{h}" fill="#fafafa"/>'
            f'<polyline points="{line}" fill="none" stroke="#36c" stroke-width="2"/>{dots}'
            f'<text x="4" y="{pad / 2 + 4:.0f}" font-size="10">{hi:.3f}</text>'
            f'<text x="4" y="{h - pad / 2 + 4:.0f}" font-size="10">{lo:.3f}</text>'
            f'<text x="{w / 2:.0f}" y="{h - 4}" font-size="10" text-anchor="middle">response token (P_j); '
            f'J = mean log-prob of the answer</text></svg>')


def _trajectory(b: int, row: dict, tokenizer, response: list[int], res) -> str:
    points, nll = res.points[b], res.nll[b].tolist()
    s_magn, s_stab, score, rewards = (t.tolist() for t in (res.s_magn[b], res.s_stab[b], res.score[b],
                                                            res.rewards[b]))
    z = normalized(rewards)

    def text(a: int, e: int) -> str:
        return escape(tokenizer.decode(response[a:e], skip_special_tokens=False, clean_up_tokenization_spaces=False))

    cot = ['<sup class="pt">0</sup>']
    for j in range(1, len(points)):
        tip = f"segment {j}: r = {rewards[j - 1]:.4f}, r' = {z[j - 1]:.2f}, J = {-nll[j]:.4f}"
        cot.append(f'<span style="background:{colour(z[j - 1])}" title="{tip}">{text(points[j - 1], points[j])}'
                   f'</span><sup class="pt">{j}</sup>')
    cot.append(f'<span class="tail">{text(points[-1], len(response))}</span>')
    rows = "".join(f"<tr><td>{j}</td><td>{points[j - 1]}..{points[j]}</td><td>{-nll[j]:.4f}</td>"
                   f"<td>{s_magn[j - 1]:.4f}</td><td>{s_stab[j - 1]:.4f}</td><td>{score[j - 1]:.4f}</td>"
                   f"<td>{rewards[j - 1]:+.4f}</td><td style='background:{colour(z[j - 1])}'>{z[j - 1]:+.2f}</td></tr>"
                   for j in range(1, len(points)))
    final = (f"S_magn = {s_magn[-1]:.4f}, S_stab = {s_stab[-1]:.4f}, S = {score[-1]:.4f} (= Σ r)"
             if rewards else "empty response: no segments")
    return (f"<section><h2>#{b + 1}: answer <code>{escape(row['answer'])}</code></h2>"
            f"<details><summary>prompt</summary><pre>{escape(row['prompt'])}</pre></details>"
            f"<p>{len(response)} response tokens, {len(points) - 1} segments; J(0) = {-nll[0]:.4f} &rarr; "
            f"J(P_m) = {-nll[-1]:.4f}; final {final}</p>"
            f'<div class="cot">{"".join(cot)}</div>'
            f"<h3>J at each point</h3>{_svg(points, [-v for v in nll], len(response))}"
            f"<h3>Segments</h3><table><tr><th>j</th><th>tokens</th><th>J(P_j)</th><th>S_magn</th><th>S_stab</th>"
            f"<th>S</th><th>r</th><th>r'</th></tr>{rows}</table></section>")


def inspect_rows(rows: list[dict], model, tokenizer, config: RePROConfig | None = None, title: str = "") -> str:
    """The HTML page for ``rows`` scored with ``model``."""
    config = config or RePROConfig()
    prompts = [encode_prompt(tokenizer, r["prompt"]) for r in rows]
    responses = [tokenizer.encode(r["response"], add_special_tokens=False) for r in rows]
    res = RePROScorer(model, tokenizer, config).score(prompts, responses, [r["answer"] for r in rows])
    legend = "".join(f'<span style="background:{colour(z)}">{z:+g}</span>' for z in (-2, -1, 0, 1, 2))
    body = "".join(_trajectory(b, row, tokenizer, responses[b], res) for b, row in enumerate(rows))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>RePro inspection</title>'
            f"<style>{STYLE}</style></head><body><h1>RePro: segment rewards of {len(rows)} chain{'s' if len(rows) > 1 else ''} of thought</h1>"
            f"<p>{escape(title)}; k = {config.num_segments}, w = {config.stability_weight:g}, "
            f"think end {escape(repr(config.think_end))}. A segment ends at each numbered point P_j; its colour is "
            f"its normalized reward r' (per trajectory, SPEC §6): <span class=legend>{legend}</span>. "
            f'Grey: after the last point (not scored). Hover a segment for its numbers.</p>{body}</body></html>')


def run_inspect(input_path: str, out: str, model: str | None = None, num_segments: int = 20) -> None:
    """`repro-fast inspect`: validate, load the model (default: offline SmolLM2), write the page."""
    if num_segments < 1:
        raise ConfigError(f"segments: expected >= 1, got {num_segments}")
    if os.path.isdir(out):
        raise ConfigError(f"out: {out!r} is a folder; name the HTML file to write")
    from repro_fast.grpo.sft import make_out_dir

    make_out_dir(os.path.dirname(out) or ".")
    rows = read_rows(input_path)
    if model is None:
        from repro_fast.offline import load_smollm2

        lm, tokenizer = load_smollm2()
        name = "SmolLM2-135M-Instruct (offline GGUF)"
    elif not os.path.isdir(model):
        raise ConfigError(f"model: folder {model!r} does not exist")
    else:
        from repro_fast.grpo.tasks import load_checkpoint

        lm, tokenizer = load_checkpoint(model)  # fp32
        name = model
    page = inspect_rows(rows, lm.eval(), tokenizer, RePROConfig(num_segments=num_segments), title=f"model {name}")
    Path(out).write_text(page, encoding="utf-8")
