"""meshforge: one picture of an object in, a game-ready 3D asset out."""

from ._version import __version__
from .errors import MeshforgeError

__all__ = ["MeshforgeError", "__version__"]
