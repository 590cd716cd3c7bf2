"""The CPU finish builds the bake's projection target (the cleaned dense surface, its Embree BVH) in a
thread while the unwrap runs: the maps must be those of building it in line, after the unwrap."""

from __future__ import annotations

import numpy as np
from skimage import data

from meshforge.backends import load_backend
from meshforge.config import PipelineConfig
from meshforge.fields.surface import FieldSurfacePart, SurfaceField
from meshforge.mesh.bake import bake
from meshforge.mesh.finish_engine import clean_surface
from meshforge.pipeline import finish as finish_raw
from meshforge.pipeline import reconstruct, run
from meshforge.types import Image


def test_maps_equal_an_in_line_bake_through_the_dense_surface():
    rgba = np.concatenate([data.rocket()[::2, ::2], np.full((214, 320, 1), 255, np.uint8)], axis=2)
    image = Image(rgba=np.ascontiguousarray(rgba), name="rocket", has_alpha=False)
    cfg = PipelineConfig().with_options(resolution=96, faces=3000, texture_size=256)
    backend = load_backend("inflate")
    raw = reconstruct(image, backend, cfg)
    result = finish_raw(raw, cfg)
    cleaned, _ = clean_surface(raw.surface, cfg.clean, engine="cpu")
    diag = float(np.linalg.norm(cleaned.vertices.max(0) - cleaned.vertices.min(0)))
    source = SurfaceField([FieldSurfacePart(cleaned, raw.attributes)], cage=cfg.bake.cage_fraction * diag)
    textures, _ = bake(result.asset.mesh, source, cfg.bake)
    got = result.asset.textures
    assert got is not None and got.normal is not None
    assert np.array_equal(got.base_color, textures.base_color)
    assert np.array_equal(got.metallic_roughness, textures.metallic_roughness)
    assert np.array_equal(got.normal, textures.normal)
    # and a second run in the same process (the thread from the first is gone) gives the same asset
    again = run(image, backend, cfg).asset
    assert np.array_equal(again.textures.normal, got.normal)
    assert np.array_equal(again.mesh.faces, result.asset.mesh.faces)
