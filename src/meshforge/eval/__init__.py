"""Measuring assets: diagnostics, metrics against a reference, renders and validation."""

from .diagnostics import diagnostics, inspect_file, preview_sheet
from .metrics import compare_surfaces

__all__ = ["compare_surfaces", "diagnostics", "inspect_file", "preview_sheet"]
