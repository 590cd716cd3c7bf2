"""Exception hierarchy.

Every error meshforge raises on purpose derives from :class:`MeshforgeError`, so a caller (the CLI, the
service) can turn it into a one-line message without a traceback. The message names what was wrong and,
where there is one, the file it came from.
"""

from __future__ import annotations


class MeshforgeError(Exception):
    """Base class of all deliberate meshforge errors."""


class InputError(MeshforgeError, ValueError):
    """The user's input (image, mesh, option value) cannot be used; the message says why."""


class BackendError(MeshforgeError):
    """A reconstruction backend is unknown, cannot be loaded, or failed while running."""


class StageError(MeshforgeError):
    """A pipeline stage could not produce a valid result (for example an empty isosurface)."""


class MissingDependency(MeshforgeError, ImportError):
    """An optional dependency is needed for the requested feature; the message says what to install."""


def one_line(exc: BaseException) -> str:
    """An exception's message as one line (whitespace collapsed), or its type name when it has none."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception (or one it was raised from) means out of memory.

    Recognised: :class:`MemoryError`, ``torch.cuda.OutOfMemoryError`` (``torch.OutOfMemoryError``), and
    errors whose message says "out of memory" (a backend's wrapped CUDA OOM, cuBLAS/cuDNN allocation errors)
    or "can't allocate memory" (torch's CPU allocator).
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
            return True
        text = str(e).lower()
        if "out of memory" in text or "can't allocate memory" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def require(module: str, feature: str, extra: str | None = None) -> object:
    """Import an optional module, or raise :class:`MissingDependency` naming what to install.

    Args:
        module: importable module name, e.g. ``"rembg"``.
        feature: the feature that needs it, for the message.
        extra: the meshforge extra that installs it, if any.

    Returns:
        The imported module object.

    Raises:
        MissingDependency: the module is not importable.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        hint = f"pip install 'meshforge[{extra}]'" if extra else f"pip install {module}"
        raise MissingDependency(f"{feature} needs the package '{module}': {hint}") from exc
