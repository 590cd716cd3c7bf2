import numpy as np
import pytest

from meshforge.backends import BackendError, load_backend, resolve_name
from meshforge.backends.inflate import InflateBackend
from meshforge.config import CleanConfig, ExtractConfig
from meshforge.eval.render import silhouette
from meshforge.fields.isosurface import extract
from meshforge.geometry.topology import topology
from meshforge.mesh.clean import clean
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


def test_color_front_is_the_picture_back_is_plausible_and_never_the_background():
    x, y = grid_xy()
    mask = x**2 + y**2 < 0.3**2
    img = picture(mask)
    rgba = img.rgba.copy()
    rgba[~mask, :3] = (0, 255, 0)  # green background must not leak into the object's colour
    rgba[(x > 0) & mask, :3] = (20, 20, 220)
    field = InflateBackend()(Image(rgba=rgba, has_alpha=True))
    pts = np.array([[-0.1, 0.0, 0.1], [-0.1, 0.0, -0.1], [0.1, 0.0, 0.1], [0.2999, 0.0, 0.0]], np.float32)
    col = np.rint(field.color(pts) * 255)
    assert (col[0] == (200, 40, 40)).all() and (col[2] == (20, 20, 220)).all()
    # the back: the rim colour carried round, blending into the low-pass front (red and blue), no green
    assert col[1][0] > col[1][2] and col[1][1] < 60
    assert col[3][1] < 30  # rim: no green
    # at the silhouette the back meets the front: the rim is the picture's colour there
    rim = np.rint(field.color(np.array([[-0.299, 0.0, -0.001], [-0.299, 0.0, 0.001]], np.float32)) * 255)
    assert np.abs(rim - (200, 40, 40)).max() <= 3
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


def striped_picture(size: int = 512) -> np.ndarray:
    """An orange disc whose left half carries black/white vertical stripes (asymmetric, high frequency)."""
    x, y = grid_xy(size)
    mask = x**2 + y**2 < 0.4**2
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., :3] = (230, 130, 40)
    stripes = mask & (x < -0.05) & (np.abs(y) < 0.2)
    white = (np.floor((x + 0.5) * size / 8) % 2) == 0  # 8-pixel stripes
    rgba[stripes & white, :3] = 255
    rgba[stripes & ~white, :3] = 0
    rgba[..., 3] = np.where(mask, 255, 0)
    return rgba


def test_baked_back_has_no_mirrored_detail_and_the_front_matches_the_picture():
    """The back is a plausible colour without the front's detail: the stripes neither show nor correlate
    with the back at the same (x, y) — the front mirrored as seen from behind — while the front keeps them."""
    import meshforge
    from meshforge.io.scene import SourceScene

    cfg = meshforge.PipelineConfig().with_options(resolution=128, faces=20_000, texture_size=1024)
    result = meshforge.generate(striped_picture(), "inflate", cfg)
    prepared = result.prepared.rgba
    s = prepared.shape[0]
    (part,) = SourceScene.from_asset(result.asset).parts
    faces = np.arange(part.mesh.n_faces)
    sample = part.sample(faces, np.full((len(faces), 3), 1.0 / 3.0))
    pos, nz = sample["position"], sample["geometric_normal"][:, 2]
    lum = sample["base_color"][:, :3].mean(axis=1)
    cols = np.clip(((pos[:, 0] + 0.5) * s).astype(int), 0, s - 1)
    rows = np.clip(((0.5 - pos[:, 1]) * s).astype(int), 0, s - 1)
    picture = prepared[rows, cols, :3].astype(float) / 255.0
    grey = (picture.max(axis=1) - picture.min(axis=1)) < 0.1  # the stripes (black, white, and their edges)
    pattern = picture.mean(axis=1)
    front, back = grey & (nz > 0.8), grey & (nz < -0.8)
    assert front.sum() > 300 and back.sum() > 300
    # the front is the picture: its stripes are there
    assert np.corrcoef(lum[front], pattern[front])[0, 1] > 0.8
    assert lum[front].std() > 0.3
    # the back carries no mirrored stripes: almost uniform there and uncorrelated with the pattern
    assert lum[back].std() < 0.04, lum[back].std()
    assert abs(np.corrcoef(lum[back], pattern[back])[0, 1]) < 0.2
    # and a plausible colour: the orange of the rim where the front is orange at the rim
    orange = (picture[:, 0] - picture[:, 2] > 0.5) & (nz < -0.8) & (pos[:, 0] > 0.2)
    assert orange.sum() > 100
    rgb = sample["base_color"][orange, :3]
    assert np.abs(rgb.mean(axis=0) - np.array([230, 130, 40]) / 255.0).max() < 0.12, rgb.mean(axis=0)


def test_color_is_the_front_back_blend_of_the_bilinear_maps():
    # color() = clip(back + (front − back)·smoothstep(z / t + 1/2)), each map sampled bilinearly at the
    # point's pixel (module docstring); checked against that formula map by map on a real photo
    from skimage import data

    from meshforge.backends.inflate import _bilinear

    rgba = np.concatenate([data.astronaut()[::2, ::2], np.full((256, 256, 1), 255, np.uint8)], axis=2)
    x, y = grid_xy(256)
    rgba[..., 3] = np.where(x**2 + (y / 1.3) ** 2 < 0.35**2, 255, 0)
    field = InflateBackend()(Image(rgba=rgba, has_alpha=True))
    rng = np.random.default_rng(5)
    p = rng.uniform(-0.5, 0.5, (20000, 3)).astype(np.float32)
    cols, rows = field._pixel(p[:, 0], p[:, 1])
    front, back = _bilinear(field._rgb, cols, rows), _bilinear(field._back, cols, rows)
    t = np.maximum(_bilinear(field._t, cols, rows), field._min_t)
    w = np.clip(p[:, 2] / t + 0.5, 0.0, 1.0)
    w = (w * w * (3.0 - 2.0 * w))[:, None]
    assert np.array_equal(field.color(p), np.clip(back + (front - back) * w, 0.0, 1.0).astype(np.float32))
