"""meshforge: one picture of an object in, a game-ready 3D asset out.

The small public surface::

    result = meshforge.generate("chair.png")          # Result(asset, report, field, prepared)
    glb = meshforge.export(result.asset, "glb")       # bytes
"""

from ._version import __version__
from .backends import load_backend
from .config import PipelineConfig
from .errors import BackendError, InputError, MeshforgeError, MissingDependency, StageError
from .export import export, export_files
from .io.images import load_image
from .pipeline import Result, generate, run
from .types import Asset, Report

__all__ = [
    "Asset",
    "BackendError",
    "InputError",
    "MeshforgeError",
    "MissingDependency",
    "PipelineConfig",
    "Report",
    "Result",
    "StageError",
    "__version__",
    "export",
    "export_files",
    "generate",
    "load_backend",
    "load_image",
    "run",
]
