"""meshforge: one picture of an object in, a game-ready 3D asset out.

The small public surface::

    result = meshforge.generate("chair.png")          # Result(asset, report, raw)
    glb = meshforge.export(result.asset, "glb")       # bytes
    meshforge.save_raw(result.raw, "chair.mfraw")     # the raw reconstruction, for later
    again = meshforge.finish(meshforge.load_raw("chair.mfraw"), config)  # other budgets, no backend
    low = meshforge.optimize("scan.glb", meshforge.OptimizeConfig().with_options(faces=5000))  # dense mesh in
"""

from ._version import __version__
from .backends import load_backend
from .config import PipelineConfig
from .errors import BackendError, InputError, MeshforgeError, MissingDependency, StageError
from .export import export, export_files
from .fields.base import Field
from .io.images import load_image
from .optimize import OptimizeConfig, optimize
from .pipeline import Result, finish, generate, run
from .raw import Raw, load_raw, save_raw
from .types import Asset, Image, Mesh, Report

__all__ = [
    "Asset",
    "BackendError",
    "Field",
    "Image",
    "InputError",
    "Mesh",
    "MeshforgeError",
    "MissingDependency",
    "OptimizeConfig",
    "PipelineConfig",
    "Raw",
    "Report",
    "Result",
    "StageError",
    "__version__",
    "export",
    "export_files",
    "finish",
    "generate",
    "load_backend",
    "load_image",
    "load_raw",
    "optimize",
    "run",
    "save_raw",
]
