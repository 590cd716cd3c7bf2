"""Shared test fixtures.

The real test data lives in ``../shared/data`` beside the checkout (as CI has it); ``MESHFORGE_SHARED``
overrides that location. Bundled examples in ``examples/images`` are used when the shared folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    env = os.environ.get("MESHFORGE_SHARED")
    return Path(env) if env else REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_images() -> Path:
    path = shared_dir() / "data" / "images"
    if not path.is_dir():
        pytest.fail(f"shared test images not found at {path} (set MESHFORGE_SHARED)")
    return path


@pytest.fixture(scope="session")
def shared_assets() -> Path:
    path = shared_dir() / "data" / "assets"
    if not path.is_dir():
        pytest.fail(f"shared test assets not found at {path} (set MESHFORGE_SHARED)")
    return path


@pytest.fixture(scope="session")
def validate():
    """The glTF validator entry point; fails (not skips) when the Node validator is not installed."""
    from meshforge.errors import MissingDependency
    from meshforge.eval.validate import find_validator, validate_gltf

    try:
        find_validator()
    except MissingDependency as exc:
        pytest.fail(str(exc))
    return validate_gltf
