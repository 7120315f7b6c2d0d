"""Compare: two or more run directories -> side-by-side figures, divergences
and the cross-backend tolerance checks, for whatever the runs share."""

from kerasft.compare.report import Comparison, View, compare_runs
from kerasft.compare.summary import summarize
from kerasft.compare.tolerances import Check, parity_checks

__all__ = ["Check", "Comparison", "View", "compare_runs", "parity_checks",
           "summarize"]
