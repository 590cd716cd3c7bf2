"""Measuring assets: diagnostics, metrics against a reference, renders and validation."""

from .diagnostics import diagnostics, format_inspection, inspect_command, inspect_file, preview_sheet
from .metrics import compare_surfaces

__all__ = ["compare_surfaces", "diagnostics", "format_inspection", "inspect_command", "inspect_file", "preview_sheet"]
