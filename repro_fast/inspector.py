"""`repro-fast inspect`: which segments of a chain of thought RePro rewards or punishes, and why. One
self-contained HTML page (no scripts or network resources, all text escaped): per trajectory the CoT
coloured by each segment's normalized reward ``r'`` (SPEC §6, the trajectory as its group), the points
``P_j``, the curve ``J(P_j)`` as inline SVG, and per segment J, S_magn, S_stab, S, r, r'.

Every bad input is a `UsageError` naming the argument (``input: line N ...``, ``out: ...``,
``model: ...``, ``segments: ...``) raised before the model runs and before any file is written."""

from __future__ import annotations

import json
import math
import os
import sys
from html import escape

from repro_fast.config import MAX_SEGMENTS, RePROConfig
from repro_fast.outputs import UsageError, check_output_file, make_out_dir
from repro_fast.rewards import normalize_rewards
from repro_fast.scorer import RePROScorer

FIELDS = ("prompt", "response", "answer")

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;padding:0 12px;\
color:#222;
overflow-wrap:anywhere}
section{border-top:2px solid #ccc;margin-top:28px;padding-top:8px}
.cot{white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-word;font-family:ui-monospace,monospace;
border:1px solid #ddd;padding:10px;line-height:1.9}
.pt{font-size:10px;font-weight:bold;color:#fff;background:#334;border-radius:3px;padding:0 3px;margin:0 2px}
.tail{color:#999}table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f4f4f4}.legend span{padding:2px 8px;margin-right:4px}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f7f7f7;padding:8px}
svg{display:block;max-width:100%;height:auto}.scroll{overflow-x:auto;max-width:100%}
.found{color:#060}.missing{color:#a40}"""


def colour(z: float) -> str:
    """Background for a normalized reward: green above 0, red below, opaque at |z| >= 2."""
    a = min(abs(z) / 2, 1.0) * 0.75
    return f"rgba(0,170,60,{a:.2f})" if z >= 0 else f"rgba(230,40,40,{a:.2f})"


def normalized(rewards: list[float]) -> list[float]:
    """SPEC §6 with the trajectory as its group (the package's own normalization)."""
    import torch

    return normalize_rewards([torch.tensor(rewards, dtype=torch.float64)], "group", None)[0].tolist()


# ------------------------------------------------------------------------------------------------
# Input
# ------------------------------------------------------------------------------------------------


def _bad_text(text: str) -> str | None:
    """Why ``text`` cannot be encoded (a lone surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"holds a lone surrogate {text[exc.start]!r} at character {exc.start + 1}, which is not text"
    return None


def read_rows(path: str) -> list[dict]:
    """JSON lines with text fields ``prompt``, ``response``, ``answer`` (each row gets its 1-based
    ``line`` number); every error is a `UsageError` naming the line."""
    if not os.path.exists(path):
        raise UsageError(f"input: file {path!r} does not exist")
    if not os.path.isfile(path):
        raise UsageError(f"input: {path!r} is not a file")
    try:
        with open(path, "rb") as fp:
            data = fp.read()
    except OSError as exc:
        raise UsageError(f"input: cannot read {path!r}: {exc.strerror or exc}") from None
    rows = []
    for i, raw in enumerate(data.splitlines(), 1):
        if i == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
            raw = raw[3:]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"input: line {i} of {path!r} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                             f"column {exc.start + 1}); save the file as UTF-8") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"input: line {i} of {path!r} is not JSON: {exc}") from None
        except RecursionError:
            raise UsageError(f"input: line {i} of {path!r} is nested too deeply to be a row") from None
        if not isinstance(row, dict):
            raise UsageError(f"input: line {i} of {path!r} is a JSON {type(row).__name__}; expected an "
                             f"object with text fields {', '.join(map(repr, FIELDS))}")
        for key in FIELDS:
            if not isinstance(row.get(key), str):
                raise UsageError(f"input: line {i} of {path!r} needs a text field {key!r}")
            if why := _bad_text(row[key]):
                raise UsageError(f"input: line {i} of {path!r}: {key!r} {why}")
        if not row["answer"].strip():
            raise UsageError(f"input: line {i} of {path!r}: 'answer' is empty; RePro scores a chain of "
                             "thought by the log-prob of its ground-truth answer")
        rows.append({**{k: row[k] for k in FIELDS}, "line": i})
    if not rows:
        raise UsageError(f"input: {path!r} holds no rows")
    return rows


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """A user turn through the tokenizer's chat template (the plain text when it has none)."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)
        if hasattr(ids, "get") and not isinstance(ids, list):  # a BatchEncoding from some releases
            ids = ids["input_ids"]
        return list(ids)
    return tokenizer.encode(prompt, add_special_tokens=False)


def max_positions(model_config) -> int | None:
    """The longest sequence the model was built for (``max_position_embeddings``; GPT-2's
    ``n_positions`` through its alias), or None when the config names none."""
    config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    limit = getattr(config, "max_position_embeddings", None)
    return int(limit) if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


def encode_rows(rows: list[dict], tokenizer, config: RePROConfig, limit: int | None, source: str,
                model_name: str) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, response ids) of ``rows``; a `UsageError` naming the line for a prompt or answer that
    encodes to nothing or a trajectory longer than ``limit`` positions (checked before any scoring)."""
    prompts, responses = [], []
    for row in rows:
        where = f"line {row['line']} of {source!r}"
        try:
            prompt = encode_prompt(tokenizer, row["prompt"])
        except Exception as exc:  # noqa: BLE001  (a user's Jinja chat template can raise anything)
            raise UsageError(f"input: {where}: the chat template of model {model_name} fails on this prompt: "
                             f"{type(exc).__name__}: {exc}") from None
        if not prompt:
            raise UsageError(f"input: {where}: 'prompt' encodes to no tokens (model {model_name} has no chat "
                             "template to wrap it); RePro needs at least one prompt token: write the prompt")
        response = tokenizer.encode(row["response"], add_special_tokens=False)
        # The scorer's answer ids (SPEC §1).
        answer = tokenizer.encode(config.answer_template.format(answer=row["answer"]),
                                  add_special_tokens=config.answer_add_special_tokens)
        if not answer:
            raise UsageError(f"input: {where}: 'answer' encodes to no tokens")
        # The longest sequence scoring builds is [prompt, response, answer[:-1]] (SPEC §2).
        length = len(prompt) + len(response) + len(answer) - 1
        if limit is not None and length > limit:
            raise UsageError(f"input: {where}: prompt + response + answer are {length} tokens "
                             f"({len(response)} in the response), more than the {limit} positions of model "
                             f"{model_name} (max_position_embeddings); shorten the chain of thought or use a "
                             "longer-context model")
        prompts.append(prompt)
        responses.append(response)
    return prompts, responses


# ------------------------------------------------------------------------------------------------
# Page
# ------------------------------------------------------------------------------------------------

FONT = 10  # px, every label of the chart
CHAR_W = 0.62 * FONT  # an upper bound of a digit's or sign's advance in the sans-serif font


def nice_ticks(n: int, most: int = 8) -> list[int]:
    """Token positions 0, s, 2s, ... <= n with s = 1, 2, 5 x 10^e: at most ``most`` of them."""
    step = 1
    while n // step + 1 > most:
        step = _next_step(step)
    return list(range(0, max(n, 0) + 1, step))


def _next_step(step: int) -> int:
    e = 10 ** int(math.floor(math.log10(step)))
    lead = step // e
    return {1: 2, 2: 5, 5: 10}[lead] * e


def _box(x: float, y: float, text: str, anchor: str = "middle") -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) that holds ``text`` drawn at baseline ``y`` (an over-estimate)."""
    w = CHAR_W * len(text)
    x0 = {"start": x, "middle": x - w / 2, "end": x - w}[anchor]
    return (x0, y - 0.8 * FONT, x0 + w, y + 0.25 * FONT)


def _overlap(a, b, gap: float = 1.0) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def _svg(points: list[int], j: list[float], n: int, w: int = 720, h: int = 230) -> str:
    """The curve J(P_j) over response-token positions: x-axis ticks at token positions, y-axis ticks
    at the lowest and highest J, each point numbered where its number fits (its tooltip always)."""
    left, right, top, bottom = 64, 24, 26, 46
    x_of = lambda p: left + 10 + (w - left - right - 10) * p / max(n, 1)  # noqa: E731  (P_0 off the y axis)
    lo, hi = min(j), max(j)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    axis_y = h - bottom
    y_of = lambda v: top + (axis_y - 12 - top) * (hi - v) / (hi - lo)  # noqa: E731  (lowest: above the axis)
    parts = [f'<rect width="{w}" height="{h}" fill="#fafafa"/>',
             f'<line x1="{left}" y1="{top - 8}" x2="{left}" y2="{axis_y}" stroke="#888"/>',
             f'<line x1="{left}" y1="{axis_y}" x2="{w - right}" y2="{axis_y}" stroke="#888"/>']
    taken = []  # boxes of every label and dot drawn so far
    for v in sorted({min(j), max(j)}):
        y = y_of(v)
        label = f"{v:.3f}"
        parts.append(f'<line x1="{left - 5}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#888"/>'
                     f'<text x="{left - 8}" y="{y + 3.5:.1f}" font-size="{FONT}" '
                     f'text-anchor="end">{label}</text>')
        taken.append(_box(left - 8, y + 3.5, label, "end"))
    ticks = nice_ticks(n)
    if n > ticks[-1] and x_of(n) - x_of(ticks[-1]) > CHAR_W * (len(str(n)) + len(str(ticks[-1]))) / 2 + 6:
        ticks.append(n)  # the response's end, where it has room
    for p in ticks:
        x = x_of(p)
        parts.append(f'<line x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 5}" stroke="#888"/>'
                     f'<text x="{x:.1f}" y="{axis_y + 16}" font-size="{FONT}" '
                     f'text-anchor="middle">{p}</text>')
        taken.append(_box(x, axis_y + 16, str(p)))
    xy = [(x_of(p), y_of(v)) for p, v in zip(points, j)]
    parts.append(f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in xy)}" fill="none" '
                 'stroke="#36c" stroke-width="2"/>')
    for i, ((x, y), p, v) in enumerate(zip(xy, points, j)):
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#334"><title>P_{i} = token {p}: '
                     f'J = {v:.4f}</title></circle>')
        taken.append((x - 4, y - 4, x + 4, y + 4))
    labels = []
    for i, (x, y) in enumerate(xy):  # above the dot, else below it, else left out (the tooltip stays)
        for by in (y - 8, y + 15):
            box = _box(x, by, str(i))
            if box[1] >= 0 and box[3] <= axis_y - 1 and not any(_overlap(box, t) for t in taken):
                taken.append(box)
                labels.append(f'<text x="{x:.1f}" y="{by:.1f}" font-size="{FONT}" '
                              f'text-anchor="middle">{i}</text>')
                break
    parts += labels
    parts.append(f'<text x="{(left + w - right) / 2:.0f}" y="{h - 8}" font-size="{FONT}" '
                 f'text-anchor="middle">response token position (P_j numbered); J = mean log-prob of the '
                 f'answer</text>')
    return (f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="J over the points">'
            f'{"".join(parts)}</svg>')


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def think_end_note(marker: str | None, text: str, points: list[int], n: int) -> tuple[bool, str]:
    """(found, HTML sentence): whether the response text holds the think-end marker (SPEC §1)."""
    if marker is None:
        return False, "no think-end marker is set: the whole response is scored"
    if marker in text:
        rest = (f"; the {_plural(n - points[-1], 'token')} after it (grey) are not scored"
                if points[-1] < n else "")
        return True, (f'<span class="found">think end {escape(repr(marker))} found</span>: scored up to '
                      f"token {points[-1]} of {n}{rest}")
    return False, (f'<span class="missing">no think end {escape(repr(marker))} in the response</span>: '
                   "scored to its last token")


def _trajectory(b: int, row: dict, tokenizer, response: list[int], res,
                config: RePROConfig) -> tuple[bool, str]:
    points, nll = res.points[b], res.nll[b].tolist()
    s_magn, s_stab, score, rewards = (t.tolist() for t in (res.s_magn[b], res.s_stab[b], res.score[b],
                                                            res.rewards[b]))
    z = normalized(rewards)

    def decoded(a: int, e: int) -> str:
        return tokenizer.decode(response[a:e], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    found, note = think_end_note(config.think_end, decoded(0, len(response)), points, len(response))
    cot = ['<sup class="pt">0</sup>']
    for j in range(1, len(points)):
        tip = f"segment {j}: r = {rewards[j - 1]:.4f}, r' = {z[j - 1]:.2f}, J = {-nll[j]:.4f}"
        cot.append(f'<span style="background:{colour(z[j - 1])}" title="{tip}">'
                   f"{escape(decoded(points[j - 1], points[j]))}</span><sup class=\"pt\">{j}</sup>")
    cot.append(f'<span class="tail">{escape(decoded(points[-1], len(response)))}</span>')
    rows = "".join(f"<tr><td>{j}</td><td>{points[j - 1]}..{points[j]}</td><td>{-nll[j]:.4f}</td>"
                   f"<td>{s_magn[j - 1]:.4f}</td><td>{s_stab[j - 1]:.4f}</td><td>{score[j - 1]:.4f}</td>"
                   f"<td>{rewards[j - 1]:+.4f}</td>"
                   f"<td style='background:{colour(z[j - 1])}'>{z[j - 1]:+.2f}</td></tr>"
                   for j in range(1, len(points)))
    final = (f"S_magn = {s_magn[-1]:.4f}, S_stab = {s_stab[-1]:.4f}, S = {score[-1]:.4f} (= Σ r)"
             if rewards else "empty response: no segments")
    return found, (
        f"<section><h2>#{b + 1}: answer <code>{escape(row['answer'])}</code></h2>"
        f"<details><summary>prompt</summary><pre>{escape(row['prompt'])}</pre></details>"
        f"<p>{_plural(len(response), 'response token')}, {_plural(len(points) - 1, 'segment')}; {note}. "
        f"J(0) = {-nll[0]:.4f} &rarr; "
        f"J(P_m) = {-nll[-1]:.4f}; final {final}</p>"
        f'<div class="cot">{"".join(cot)}</div>'
        f"<h3>J at each point</h3>{_svg(points, [-v for v in nll], len(response))}"
        f'<h3>Segments</h3><div class="scroll"><table><tr><th>j</th><th>tokens</th><th>J(P_j)</th>'
        f"<th>S_magn</th><th>S_stab</th><th>S</th><th>r</th><th>r'</th></tr>{rows}</table></div></section>")


def render_page(rows: list[dict], tokenizer, responses: list[list[int]], res, config: RePROConfig,
                title: str = "") -> str:
    """The HTML page of scored ``rows`` (``res``: their `RePROResult`)."""
    legend = "".join(f'<span style="background:{colour(z)}">{z:+g}</span>' for z in (-2, -1, 0, 1, 2))
    found, body = zip(*(_trajectory(b, row, tokenizer, responses[b], res, config)
                        for b, row in enumerate(rows)))
    if config.think_end is None:
        marker = "no think-end marker is set (every response is scored to its last token)"
    else:
        name = f"the think end {escape(repr(config.think_end))}"
        marker = (f"every response has {name}" if all(found) else
                  f"no response has {name} (each is scored to its last token)" if not any(found) else
                  f"{sum(found)} of {len(found)} responses have {name}")
    n = len(rows)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>RePro inspection</title><style>{STYLE}</style></head><body>"
            f"<h1>RePro: segment rewards of {n} chain{'s' if n > 1 else ''} "
            f"of thought</h1><p>{escape(title) + '; ' if title else ''}k = {config.num_segments}, "
            f"w = {config.stability_weight:g}; "
            f"{marker}. A segment ends at each numbered point P_j; its colour is its normalized reward r' "
            f"(per trajectory, SPEC §6): <span class=legend>{legend}</span>. Grey: after the last point (not "
            f"scored). Hover a segment for its numbers.</p>{''.join(body)}</body></html>")


def inspect_rows(rows: list[dict], model, tokenizer, config: RePROConfig | None = None,
                 title: str = "") -> str:
    """The HTML page for ``rows`` (dicts with ``prompt``, ``response``, ``answer``) scored with ``model``."""
    config = config or RePROConfig()
    rows = [{**r, "line": r.get("line", i)} for i, r in enumerate(rows, 1)]
    prompts, responses = encode_rows(rows, tokenizer, config, max_positions(model.config), "rows",
                                     type(model).__name__)
    res = RePROScorer(model, tokenizer, config).score(prompts, responses, [r["answer"] for r in rows])
    return render_page(rows, tokenizer, responses, res, config, title)


# ------------------------------------------------------------------------------------------------
# Command
# ------------------------------------------------------------------------------------------------


def _progress(message: str) -> None:
    print(f"inspect: {message}", file=sys.stderr, flush=True)


def _check_model_folder(model: str):
    """The config of a Hugging Face model folder (cheap: no weights are read)."""
    if not os.path.exists(model):
        raise UsageError(f"model: folder {model!r} does not exist")
    if not os.path.isdir(model):
        raise UsageError(f"model: {model!r} is not a folder; expected a Hugging Face model folder")
    if not os.path.isfile(os.path.join(model, "config.json")):
        raise UsageError(f"model: folder {model!r} has no config.json; expected a Hugging Face model folder "
                         "(config.json, weights, tokenizer files), e.g. one written by save_pretrained")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"model: cannot read {os.path.join(model, 'config.json')!r}: {exc}") from None


def _load_tokenizer(model: str):
    """The tokenizer of the model folder ``model``."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"model: cannot load a tokenizer from {model!r}: {exc}") from None


def _load_model(model: str | None, progress: bool = True):
    """(lm in fp32 eval mode, its tokenizer or None); ``model`` None: the offline SmolLM2 and its
    tokenizer (``progress`` False: without transformers' bars)."""
    if model is None:
        from repro_fast.offline import load_smollm2

        lm, tokenizer = load_smollm2(progress=progress)
        return lm.eval(), tokenizer
    import torch
    from transformers import AutoModelForCausalLM

    try:
        lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"model: cannot load a causal LM from {model!r}: {exc}") from None
    return lm.eval(), None


def run_inspect(input_path: str, out: str, model: str | None = None, num_segments: int = 20,
                overwrite: bool = False, progress: bool = True) -> None:
    """`repro-fast inspect`: check every argument and row, load the tokenizer (default: the offline
    SmolLM2's, with its model), check every row's tokens, load the model, score, write the page (``out``
    is replaced only when ``overwrite``; it may never be the input). Progress lines go to stderr;
    ``progress`` False turns the progress bars off."""
    if (isinstance(num_segments, bool) or not isinstance(num_segments, int)
            or not 1 <= num_segments <= MAX_SEGMENTS):
        raise UsageError(f"segments: expected an int in [1, {MAX_SEGMENTS}], got {num_segments!r}")
    if not os.path.exists(input_path):
        raise UsageError(f"input: file {input_path!r} does not exist")
    if not os.path.isfile(input_path):
        raise UsageError(f"input: {input_path!r} is not a file")
    check_output_file(out, name="out", inputs=(input_path,), overwrite=overwrite)
    model_config = None if model is None else _check_model_folder(model)
    rows = read_rows(input_path)
    size = os.path.getsize(input_path)
    size_text = f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"
    what = f"{_plural(len(rows), 'row')} ({size_text}) from {input_path}"
    config = RePROConfig(num_segments=num_segments)
    if model is None:
        name = "SmolLM2-135M-Instruct (offline GGUF)"
        _progress(f"{what}; loading {name} ...")
        lm, tokenizer = _load_model(None, progress)
        model_config = lm.config
    else:
        name, lm = model, None
        _progress(f"{what}; tokenizing with {model} ...")
        tokenizer = _load_tokenizer(model)
    prompts, responses = encode_rows(rows, tokenizer, config, max_positions(model_config), input_path, name)
    if lm is None:
        _progress(f"loading model {model} ...")
        lm, _ = _load_model(model)
    rows_in_embedding = lm.get_input_embeddings().weight.shape[0]
    for row, ids in zip(rows, (p + r for p, r in zip(prompts, responses))):
        if ids and max(ids) >= rows_in_embedding:
            raise UsageError(f"model: its tokenizer gives id {max(ids)} on line {row['line']} of "
                             f"{input_path!r}, outside the model's {rows_in_embedding}-row embedding; the "
                             "folder's tokenizer does not belong to its model")
    tokens = sum(map(len, prompts)) + sum(map(len, responses))
    _progress(f"scoring {_plural(len(rows), 'chain')} of thought ({tokens} tokens, the longest response "
              f"{max(map(len, responses))}) ...")
    res = RePROScorer(lm, tokenizer, config).score(prompts, responses, [r["answer"] for r in rows])
    page = render_page(rows, tokenizer, responses, res, config, title=f"model {name}")
    make_out_dir(os.path.dirname(out) or ".", name="out")
    tmp = f"{out}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fp:
            fp.write(page)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
