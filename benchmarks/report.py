"""How the benchmarks report: the machine a table was measured on, number formats, and the
markdown sections they write into `RESULTS.md` (or ``--out``)."""

from __future__ import annotations

import datetime
import os
import platform
import re

RESULTS_PREAMBLE = ("# Benchmark results\n\nWritten by `python benchmarks/bench_table.py`; "
                    "see `benchmarks/README.md` for what each row means.\n\n")


# --------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------

def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            m = re.search(r"^model name\s*:\s*(.+)$", fh.read(), re.M)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_description(preset_name: str) -> tuple[str, str]:
    """(human description, key identifying the machine for in-place updates) of a preset's run:
    the card on gpu presets, the CPU and cores, torch and transformers versions, the date."""
    import torch
    import transformers

    parts = []
    if preset_name.startswith("gpu") and torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name())
    parts.append(f"{cpu_name()}, {os.cpu_count()} cores")
    parts.append(f"torch {torch.__version__}, transformers {transformers.__version__}")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    desc = "; ".join(parts) + f"; {date}"
    key = f"{preset_name}|" + "|".join(parts[:-1])  # card and CPU: versions and date may change
    return desc, key


def loadavg() -> str:
    """The 1-minute load average, as ``/proc/loadavg`` writes it ("?" where unreadable)."""
    try:
        with open("/proc/loadavg") as fh:
            return fh.read().split()[0]
    except OSError:
        return "?"


def busy(*loads: str) -> bool:
    """Whether any of these load averages is above the core count (wall times inflated)."""
    def value(text: str) -> float:
        try:
            return float(text)
        except (TypeError, ValueError):
            return 0.0

    return any(value(x) > (os.cpu_count() or 1) for x in loads)


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------

def fmt_time(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def fmt_mem(b: float) -> str:
    return f"{b / 2**20:.1f} MiB" if b < 2**30 else f"{b / 2**30:.2f} GiB"


def ratio(a, b) -> str:
    """``a / b`` as "1.23×", "–" when either is missing or ``b`` is 0."""
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


# --------------------------------------------------------------------------------------------
# Markdown files
# --------------------------------------------------------------------------------------------

def _read(path: str) -> str:
    if os.path.exists(path):
        with open(path) as fh:
            return fh.read()
    return ""


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text if text.endswith("\n") else text + "\n")


def replace_section(path: str, key: str, section: str, tag: str = "bench_table") -> None:
    """Write ``section`` into ``path`` between ``<!-- tag: key -->`` and ``<!-- /tag -->``,
    replacing the section of the same key in place, else appending it."""
    begin, end = f"<!-- {tag}: {key} -->", f"<!-- /{tag} -->"
    section = f"{begin}\n{section}\n{end}"
    text = _read(path) or RESULTS_PREAMBLE
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    _write(path, text)


def append_section(path: str, section: str) -> None:
    """Append ``section`` (a heading and its body) to ``path``, after a blank line."""
    text = _read(path) or RESULTS_PREAMBLE
    _write(path, text.rstrip("\n") + "\n\n" + section.strip("\n") + "\n")
