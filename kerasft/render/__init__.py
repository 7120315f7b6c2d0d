"""Render: run directory -> figures -> one static HTML report.

Pure functions of the recorded numbers: nothing here imports training code
or a Keras backend.
"""

from kerasft.render.base import FigureResult, RenderOptions
from kerasft.render.report import Report, render_report

__all__ = ["FigureResult", "RenderOptions", "Report", "render_report"]
