"""The paper's grid elastic deformation: exact at nodes, bicubic in between, labels moved never blended."""

import albumentations as A
import cv2
import numpy as np
import pytest

from unetkit.data.elastic import GridElastic, displacement_field


def _fixed(transform: GridElastic, vectors: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> GridElastic:
    """Make `transform` use the given node vectors instead of random ones."""
    monkeypatch.setattr(transform, "get_params", lambda: {"vectors": vectors})
    return transform


def test_field_equals_the_sampled_vectors_at_the_nodes() -> None:
    vectors = np.random.default_rng(0).normal(0.0, 10.0, (3, 3, 2))
    field = displacement_field(vectors, 9, 13)  # nodes at rows 0, 4, 8 and columns 0, 6, 12
    assert field.shape == (9, 13, 2)
    np.testing.assert_array_equal(field[::4, ::6], vectors)


def test_one_node_impulse_follows_keys_cubic_convolution() -> None:
    vectors = np.zeros((3, 3, 2))
    vectors[1, 1, 0] = 1.0  # dx = 1 at the centre node (4, 4) of a 9 x 9 image
    field = displacement_field(vectors, 9, 9)
    # Half-way between nodes (t = 0.5): w(0.5) = 0.5625 from the node itself, plus -w(1.5) = 0.0625 through
    # the linearly extrapolated node beyond the edge (2 v0 - v1). At t = 0.25: w(0.75) - w(1.25) = 0.296875.
    np.testing.assert_allclose(field[4, :, 0], [0, 0.296875, 0.625, 0.890625, 1, 0.890625, 0.625, 0.296875, 0])
    np.testing.assert_allclose(field[:, 2, 0], 0.625 * field[:, 4, 0])  # separable
    assert not field[..., 1].any()


def test_vectors_linear_in_the_grid_give_a_linear_field_everywhere() -> None:
    i, j = np.mgrid[:3, :3]
    vectors = np.stack([4.0 * j, -2.0 * i], axis=-1)  # nodes 6 px apart in x, 4 px apart in y
    field = displacement_field(vectors, 9, 13)
    ys, xs = np.mgrid[:9, :13]
    np.testing.assert_allclose(field[..., 0], 4.0 * xs / 6, atol=1e-12)
    np.testing.assert_allclose(field[..., 1], -2.0 * ys / 4, atol=1e-12)


def test_bad_vector_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="gy >= 2"):
        displacement_field(np.zeros((1, 3, 2)), 8, 8)


@pytest.mark.parametrize("interpolation", [cv2.INTER_LINEAR, cv2.INTER_CUBIC])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_zero_displacement_is_the_identity(interpolation: int, dtype: type) -> None:
    rng = np.random.default_rng(1)
    image = (rng.random((33, 47, 3)) * 255).astype(dtype)
    mask = rng.integers(0, 4, (33, 47), dtype=np.uint8)
    out = GridElastic(sigma=0.0, interpolation=interpolation, p=1.0)(image=image, mask=mask)
    assert out["image"].dtype == dtype
    np.testing.assert_array_equal(out["image"], image)
    np.testing.assert_array_equal(out["mask"], mask)


def test_constant_displacement_shifts_by_exactly_three_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    image = rng.random((20, 24, 6), dtype=np.float32)  # 6 channels: more than cv2.remap takes at once
    mask = rng.integers(0, 3, (20, 24), dtype=np.uint8)
    vectors = np.zeros((3, 3, 2))
    vectors[..., 0] = 3.0
    out = _fixed(GridElastic(p=1.0), vectors, monkeypatch)(image=image, mask=mask)
    np.testing.assert_array_equal(out["image"][:, 3:], image[:, :-3])
    np.testing.assert_array_equal(out["mask"][:, 3:], mask[:, :-3])
    np.testing.assert_array_equal(out["mask"][:, :3], mask[:, 3:0:-1])  # reflect-101 border


def test_constant_border_fills_every_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    image = np.zeros((10, 10, 3), np.uint8)
    vectors = np.zeros((3, 3, 2))
    vectors[..., 1] = 2.0  # content moves 2 px down
    transform = GridElastic(border_mode=cv2.BORDER_CONSTANT, fill=7, fill_mask=255, p=1.0)
    out = _fixed(transform, vectors, monkeypatch)(image=image, mask=np.ones((10, 10), np.uint8))
    assert (out["image"][:2] == 7).all() and (out["image"][2:] == 0).all()
    assert (out["mask"][:2] == 255).all() and (out["mask"][2:] == 1).all()


def test_masks_and_weight_maps_keep_their_values_and_move_together() -> None:
    rng = np.random.default_rng(3)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:40, 8:50] = 3
    mask[30:60, 25:35] = 7
    mask[:, 60:] = 255
    weight = np.where(mask == 3, 2.5, 1.0).astype(np.float32)
    image = rng.random((64, 64, 1), dtype=np.float32)
    pipeline = A.Compose([GridElastic(p=1.0)], additional_targets={"weight": "mask"}, seed=0)
    out = pipeline(image=image, mask=mask, weight=weight)
    assert out["image"].shape == (64, 64, 1) and out["weight"].dtype == np.float32
    assert not np.array_equal(out["mask"], mask)  # it did deform
    assert set(np.unique(out["mask"]).tolist()) <= {0, 3, 7, 255}
    np.testing.assert_array_equal(out["weight"], np.where(out["mask"] == 3, 2.5, 1.0))


def test_image_and_mask_share_one_field() -> None:
    mask = np.zeros((48, 48), np.uint8)
    mask[12:36, 20:30] = 1
    transform = GridElastic(interpolation=cv2.INTER_NEAREST, p=1.0)
    out = A.Compose([transform], seed=5)(image=mask.astype(np.float32), mask=mask)
    np.testing.assert_array_equal(out["image"], out["mask"])


def test_sampled_vectors_have_the_requested_spread() -> None:
    transform = GridElastic()
    transform.set_random_seed(0)
    draws = np.stack([transform.get_params()["vectors"] for _ in range(200)])
    assert draws.shape == (200, 3, 3, 2)
    assert 9.0 < draws.std() < 11.0
    assert abs(draws.mean()) < 1.0


def test_compose_seed_makes_it_reproducible() -> None:
    image = np.random.default_rng(4).random((40, 40, 3), dtype=np.float32)
    runs = [A.Compose([GridElastic(p=1.0)], seed=seed)(image=image)["image"] for seed in (11, 11, 12)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_serialization_round_trip_gives_the_same_transform() -> None:
    original = GridElastic(grid=4, sigma=5.0, interpolation=cv2.INTER_CUBIC, fill_mask=255, p=0.7)
    spec = A.to_dict(original)
    assert spec["transform"]["__class_fullname__"] == "unetkit.data.elastic.GridElastic"
    restored = A.from_dict(spec)
    assert isinstance(restored, GridElastic)
    assert A.to_dict(restored) == spec
    image = np.random.default_rng(5).random((30, 30, 3), dtype=np.float32)
    a, b = (A.Compose([t], seed=9)(image=image)["image"] for t in (original, restored))
    np.testing.assert_array_equal(a, b)


def test_config_entry_names_the_class_by_its_module_path() -> None:
    entry = {"__class_fullname__": "unetkit.data.elastic.GridElastic", "grid": 3, "sigma": 10.0, "p": 0.5}
    transform = A.from_dict({"transform": entry})
    assert (transform.grid, transform.sigma, transform.p) == (3, 10.0, 0.5)
    assert transform.border_mode == cv2.BORDER_REFLECT_101 and transform.mask_interpolation == cv2.INTER_NEAREST


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="grid"):
        GridElastic(grid=1)
    with pytest.raises(ValueError, match="sigma"):
        GridElastic(sigma=-1.0)
