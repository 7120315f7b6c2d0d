"""Compare: two or more run directories -> side-by-side figures, divergences
and the cross-backend tolerance checks."""

from kerasft.compare.report import Comparison, compare_runs
from kerasft.compare.tolerances import Check, parity_checks

__all__ = ["Check", "Comparison", "compare_runs", "parity_checks"]
