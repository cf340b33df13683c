"""repro_fast: RePro process rewards (arXiv 2512.01925) at the cost of about one forward pass.

Public API (SPEC §7): the names in ``__all__`` and the fused ops in `repro_fast.ops`.
"""

from repro_fast import ops
from repro_fast.advantages import grpo_advantages, process_advantages
from repro_fast.config import RePROConfig
from repro_fast.phase1 import UnusableRecord
from repro_fast.scorer import RePROResult, RePROScorer

__all__ = ["RePROConfig", "RePROScorer", "RePROResult", "UnusableRecord", "grpo_advantages",
           "process_advantages", "ops"]
__version__ = "0.1.0"
