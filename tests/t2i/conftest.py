"""A tiny random FLUX pipeline folder (``meshforge models random t2i --size tiny``), written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("diffusers")


@pytest.fixture(scope="session")
def tiny_t2i(tmp_path_factory) -> Path:
    from meshforge.cli import main

    folder = tmp_path_factory.mktemp("t2i") / "tiny"
    assert main(["models", "random", "t2i", "--size", "tiny", "-o", str(folder)]) == 0
    return folder
