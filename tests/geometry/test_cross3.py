import numpy as np
import pytest

from meshforge.geometry.normals import cross3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross3_is_np_cross_bit_for_bit(dtype):
    rng = np.random.default_rng(4)
    a = (rng.normal(size=(1000, 3)) * 10.0 ** rng.integers(-6, 6, (1000, 1))).astype(dtype)
    b = (rng.normal(size=(1000, 3)) * 10.0 ** rng.integers(-6, 6, (1000, 1))).astype(dtype)
    for x, y in ((a, b), (a[:1], b), (a.reshape(10, 100, 3), b.reshape(10, 100, 3)), (a[:, None], b[None, :7])):
        got, ref = cross3(x, y), np.cross(x, y)
        assert got.dtype == ref.dtype and got.shape == ref.shape
        assert np.array_equal(got, ref)
