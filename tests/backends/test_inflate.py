import numpy as np
import pytest

from meshforge.backends import BackendError, load_backend, resolve_name
from meshforge.backends.inflate import InflateBackend
from meshforge.config import CleanConfig, ExtractConfig
from meshforge.eval.render import silhouette
from meshforge.fields.isosurface import extract
from meshforge.mesh.clean import clean
from meshforge.mesh.topology import topology
from meshforge.types import Image


def picture(mask: np.ndarray, rgb=(200, 40, 40)) -> Image:
    rgba = np.zeros(mask.shape + (4,), np.uint8)
    rgba[..., :3] = rgb
    rgba[..., 3] = np.where(mask, 255, 0)
    return Image(rgba=rgba, name="synthetic", has_alpha=True)


def grid_xy(size=512):
    c = (np.arange(size) + 0.5) / size - 0.5
    return np.meshgrid(c, -c)  # x right, y up (rows go down)


def thickness_at(field, x, y):
    zs = np.linspace(-0.5, 0.5, 20001, dtype=np.float32)
    pts = np.stack([np.full_like(zs, x), np.full_like(zs, y), zs], 1)
    inside = zs[field.density(pts) > 0]
    return inside.max() if inside.size else 0.0


def test_strip_inflates_to_a_round_tube():
    x, y = grid_xy()
    field = InflateBackend()(picture((np.abs(y) < 0.1) & (np.abs(x) < 0.4)))
    assert thickness_at(field, 0.0, 0.0) == pytest.approx(0.1, rel=0.06)
    assert thickness_at(field, 0.0, 0.06) == pytest.approx(np.sqrt(0.1**2 - 0.06**2), rel=0.08)


def test_disc_inflates_to_a_spheroid_of_half_depth_r_over_sqrt2():
    x, y = grid_xy()
    field = InflateBackend()(picture(x**2 + y**2 < 0.3**2))
    assert thickness_at(field, 0.0, 0.0) == pytest.approx(0.3 / np.sqrt(2), rel=0.03)
    # thickness grows with local width: a wider disc is thicker
    wide = InflateBackend()(picture(x**2 + y**2 < 0.4**2))
    assert thickness_at(wide, 0.0, 0.0) > thickness_at(field, 0.0, 0.0) * 1.25


def test_colour_front_and_back_come_from_the_picture_and_never_the_background():
    x, y = grid_xy()
    mask = x**2 + y**2 < 0.3**2
    img = picture(mask)
    rgba = img.rgba.copy()
    rgba[~mask, :3] = (0, 255, 0)  # green background must not leak into the object's colour
    rgba[(x > 0) & mask, :3] = (20, 20, 220)
    field = InflateBackend()(Image(rgba=rgba, has_alpha=True))
    pts = np.array([[-0.1, 0.0, 0.1], [-0.1, 0.0, -0.1], [0.1, 0.0, 0.1], [0.2999, 0.0, 0.0]], np.float32)
    col = np.rint(field.colour(pts) * 255)
    assert (col[0] == (200, 40, 40)).all() and (col[1] == (200, 40, 40)).all()
    assert (col[2] == (20, 20, 220)).all()
    assert col[3][1] < 30  # rim: no green
    metallic, roughness = field.material(pts)
    assert (metallic == 0).all() and np.allclose(roughness, 0.8)


def test_isosurface_silhouette_matches_the_mask():
    x, y = grid_xy()
    mask = ((x**2 + y**2) < 0.3**2) | ((np.abs(x) < 0.02) & (y < 0) & (y > -0.45))  # blob with a thin leg
    backend = InflateBackend()
    field = backend(picture(mask))
    mesh, _ = clean(extract(field, ExtractConfig(resolution=256)), CleanConfig())
    assert topology(mesh.vertices, mesh.faces).watertight
    sil = silhouette(mesh, backend.camera, 512)
    iou = (sil & mask).sum() / (sil | mask).sum()
    assert iou > 0.98


def test_registry_resolves_auto_to_inflate_and_rejects_unknown_names():
    name, note = resolve_name("auto")
    assert name == "inflate" and "weightless 'inflate'" in note
    assert resolve_name("inflate") == ("inflate", None)
    assert isinstance(load_backend("inflate"), InflateBackend)
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        load_backend("nope")
