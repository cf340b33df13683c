"""Style of the whole tree: `ruff check` with the rules chosen in pyproject.toml (line length 110)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    # ruff comes with the dev extra: missing, this fails (never skips).
    command = [sys.executable, "-m", "ruff", "check", "repro_fast", "tests", "benchmarks", "examples"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"ruff check failed:\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
