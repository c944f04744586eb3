"""NSOARTC transform: the properties DESIGN §3 requires, against a slow reference."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.nsoartc import (
    NsoartcTransform,
    UnitSpace,
    rt_features,
    synth_good_frames,
    window_centres,
    windows_shape,
)


def reference_features(
    golden: np.ndarray, frame: np.ndarray, k: int, stride: int, eps: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """Explicit loops over windows, float64, the literal DESIGN §3 formulas."""
    r = k // 2
    g = np.pad(np.asarray(golden, np.float64), r, mode="reflect")
    x = np.pad(np.asarray(frame, np.float64), r, mode="reflect")
    ys = window_centres(golden.shape[0], stride)
    xs = window_centres(golden.shape[1], stride)
    beta = np.zeros((len(ys), len(xs)))
    sigma = np.zeros_like(beta)
    n = k * k
    for i, cy in enumerate(ys):
        for j, cx in enumerate(xs):
            gw = g[cy : cy + k, cx : cx + k]
            xw = x[cy : cy + k, cx : cx + k]
            sgg = float((gw * gw).sum())
            sxx = float((xw * xw).sum())
            sgx = float((gw * xw).sum())
            beta[i, j] = sgx / (sgg + eps)
            se = max(sxx - sgx * sgx / (sgg + eps), 0.0)
            sigma[i, j] = np.sqrt(se / (n - 1))
    return beta, sigma


def textured(shape: tuple[int, int], seed: int = 0, lo: int = 40) -> np.ndarray:
    """Smooth random texture in [lo, 255] (no flat black windows, so β is well conditioned)."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, shape).astype(np.float32), (0, 0), 2.0)
    img = cv2.normalize(img, None, lo, 255, cv2.NORM_MINMAX)
    return np.rint(img).astype(np.uint8)


# ------------------------------------------------------------------------------ geometry


def test_window_centres_rule() -> None:
    assert window_centres(7, 1).tolist() == list(range(7))
    assert window_centres(10, 2).tolist() == [0, 2, 4, 6, 8]
    assert window_centres(10, 3).tolist() == [1, 4, 7, 9]  # last clamped to the last pixel
    assert window_centres(9, 4).tolist() == [1, 5, 8]
    assert windows_shape((1024, 1280), 3) == (342, 427)
    with pytest.raises(ValueError):
        window_centres(10, 0)


# ------------------------------------------------------------------------------ RT features


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_identical_frame_gives_beta_one_sigma_zero(dtype: type) -> None:
    g = textured((40, 50)).astype(dtype)
    beta, sigma = rt_features(g, g.copy(), k=9)
    assert beta.dtype == np.float32 and sigma.dtype == np.float32
    np.testing.assert_allclose(beta, 1.0, atol=1e-6)
    assert float(np.abs(sigma).max()) < 2e-4  # sqrt(ε/(n−1)) = 1.1e-4 from ε = 1e-6


@pytest.mark.parametrize("a", [0.5, 1.7])
def test_scaled_frame_gives_beta_a_sigma_zero(a: float) -> None:
    g = textured((40, 50), seed=1).astype(np.float64)
    beta, sigma = rt_features(g, a * g, k=9)
    np.testing.assert_allclose(beta, a, atol=1e-5)
    assert float(np.abs(sigma).max()) < 2e-4


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("k", [3, 5, 9])
def test_equals_slow_reference_uint8(k: int, stride: int) -> None:
    rng = np.random.default_rng(k * 10 + stride)
    g = rng.integers(0, 256, (23, 31), dtype=np.uint8)
    x = rng.integers(0, 256, (23, 31), dtype=np.uint8)
    x[:5] = g[:5]  # some exactly matching windows too
    beta, sigma = rt_features(g, x, k=k, stride=stride)
    rb, rs = reference_features(g, x, k, stride)
    assert beta.shape == rb.shape == windows_shape(g.shape, stride)
    np.testing.assert_allclose(beta, rb, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(sigma, rs, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 4])
def test_equals_slow_reference_float_with_dark_windows(stride: int) -> None:
    rng = np.random.default_rng(7)
    g = rng.uniform(0, 1, (21, 26)) * 200
    g[:8, :10] = 0.0  # flat black golden: S_gg = 0, β = 0, σ from the frame alone
    x = g * 0.9 + rng.normal(0, 3, g.shape)
    beta, sigma = rt_features(g, x, k=5, stride=stride)
    rb, rs = reference_features(g, x, 5, stride)
    np.testing.assert_allclose(beta, rb, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(sigma, rs, rtol=1e-5, atol=1e-4)


def test_colour_features_per_channel() -> None:
    g = np.dstack([textured((20, 24), s) for s in range(3)])
    x = g.copy()
    x[..., 1] = np.clip(x[..., 1].astype(int) + 30, 0, 255).astype(np.uint8)
    beta, sigma = rt_features(g, x, k=5)
    assert beta.shape == (3, 20, 24)
    np.testing.assert_allclose(beta[0], 1.0, atol=1e-6)
    assert float(sigma[1].max()) > 0.1


# ------------------------------------------------------------------------------ unit space


def test_unit_space_never_singular_single_frame_and_flat_windows() -> None:
    g = textured((32, 40))
    g[:16] = 0  # flat black: β ≡ 0 in every frame
    feats = [rt_features(g, g, k=5)]  # M = 1: no per-window covariance at all
    us = UnitSpace.fit(feats)
    det = us.inv_a * us.inv_c - us.inv_b**2
    assert np.all(np.isfinite(det)) and np.all(det > 0) and np.all(us.inv_a > 0)
    frames = list(synth_good_frames(g, n=6, seed=3, noise=0.0, gain=0.0, shift=0.0))
    us2 = UnitSpace.fit([rt_features(g, f, k=5) for f in frames], shrink=0.0)
    det2 = us2.inv_a * us2.inv_c - us2.inv_b**2
    assert np.all(np.isfinite(det2)) and np.all(det2 > 0)
    d = us2.score(*rt_features(g, frames[0], k=5))
    assert np.all(np.isfinite(d))


def test_shrinkage_toward_pooled() -> None:
    rng = np.random.default_rng(0)
    feats = [(rng.normal(1, 0.1, (6, 7)), rng.normal(5, 1.0, (6, 7))) for _ in range(30)]
    full = UnitSpace.fit(feats, shrink=1.0)  # pooled covariance everywhere
    assert np.allclose(full.inv_a, full.inv_a[0, 0], rtol=1e-5)
    none = UnitSpace.fit(feats, shrink=0.0)
    assert not np.allclose(none.inv_a, none.inv_a[0, 0], rtol=1e-3)
    assert UnitSpace.fit(feats).meta["shrink"] == pytest.approx(2 / 31)
    with pytest.raises(ValueError):
        UnitSpace.fit(feats, shrink=1.5)
    with pytest.raises(ValueError):
        UnitSpace.fit([])


def test_mean_d2_about_one_on_good_frames() -> None:
    # good frames = golden × gain + noise; fit on 60, score 20 held out
    g = textured((48, 64), seed=2)
    rng = np.random.default_rng(1)

    def good() -> np.ndarray:
        f = g.astype(np.float64) * rng.uniform(0.95, 1.05) + rng.normal(0, 3, g.shape)
        return f

    us = UnitSpace.fit([rt_features(g, good(), k=7) for _ in range(60)])
    d2 = np.concatenate([us.score_squared(*rt_features(g, good(), k=7)).ravel() for _ in range(20)])
    assert 0.8 < float(d2.mean()) < 1.25


def test_save_load_roundtrip(tmp_path) -> None:
    g = textured((30, 30))
    us = UnitSpace.synthesize(g, 5, 2, n=6, seed=1)
    p = tmp_path / "us.npz"
    us.save(p)
    back = UnitSpace.load(p)
    for name in ("mu1", "mu2", "inv_a", "inv_b", "inv_c"):
        np.testing.assert_array_equal(getattr(us, name), getattr(back, name))
    assert back.meta["k"] == 5 and back.meta["stride"] == 2
    assert back.meta["synth"]["n"] == 6
    bad = tmp_path / "bad.npz"
    np.savez(bad, foo=np.zeros(3))
    with pytest.raises(ValueError):
        UnitSpace.load(bad)


def test_synth_good_frames_deterministic_and_varied() -> None:
    g = np.zeros((40, 40), np.uint8)
    cv2.circle(g, (20, 20), 10, 255, -1)
    a = list(synth_good_frames(g, n=6, seed=4))
    b = list(synth_good_frames(g, n=6, seed=4))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(x.dtype == np.uint8 and x.shape == g.shape for x in a)
    area = [int((x > 127).sum()) for x in a]
    assert area[0] < area[1] < area[2]  # eroded, as is, dilated


# ------------------------------------------------------------------------------ transform


def blob_setup(k: int = 9, stride: int = 1):
    g = textured((96, 112), seed=5)
    us = UnitSpace.synthesize(g, k, stride, n=24, seed=0)
    tr = NsoartcTransform(g, us, k=k, stride=stride)
    x = g.copy()
    x[40:48, 50:58] = 0  # 8×8 black blob
    return g, tr, x


def test_blob_raises_d_only_within_half_window() -> None:
    k = 9
    g, tr, x = blob_setup(k)
    d = tr.distance(x)
    base = tr.distance(g)
    assert d.shape == g.shape and d.dtype == np.float32
    r = k // 2
    near = np.zeros(g.shape, bool)
    near[40 - r : 48 + r, 50 - r : 58 + r] = True
    # untouched outside k/2 of the blob: equal up to float32 rounding (OpenCV's SIMD paths depend
    # on buffer alignment, which moves the last bit between runs)
    np.testing.assert_allclose(d[~near], base[~near], rtol=1e-6, atol=1e-6)
    assert float(d[40:48, 50:58].min()) > 3 * float(base.max())


def test_stride_maps_blocks_to_frame() -> None:
    g, tr, x = blob_setup(9, stride=3)
    dw = tr.distance_windows(x)
    assert dw.shape == windows_shape(g.shape, 3)
    d = tr.distance(x)
    assert d.shape == g.shape
    yy, xx = np.mgrid[0 : g.shape[0], 0 : g.shape[1]]
    np.testing.assert_allclose(d, dw[yy // 3, xx // 3], rtol=1e-6, atol=1e-6)  # see above
    assert float(d[44, 54]) > 3 * float(tr.distance(g).max())


def test_valid_mask_silences_invalid_windows() -> None:
    g, tr, _ = blob_setup(9)
    x = g.copy()
    x[:, :10] = 0  # warped-in black border
    valid = np.full(g.shape, 255, np.uint8)
    valid[:, :10] = 0
    d_raw = tr.distance(x)
    d = tr.distance(x, valid)
    assert float(d_raw[:, :12].max()) > 5.0
    assert float(d[:, : 10 + 4].max()) == 0.0  # window not fully valid → D = 0
    np.testing.assert_allclose(d[:, 14:], d_raw[:, 14:], rtol=1e-6, atol=1e-6)


def test_metric_image_mapping() -> None:
    g, tr, x = blob_setup(9)
    d = np.array([[0.0, 4.0, 8.0, 100.0]], np.float32)
    np.testing.assert_array_equal(tr.metric_image(d), [[0, 128, 255, 255]])
    m = tr.metric_image(tr.distance(x))
    assert m.dtype == np.uint8 and m.shape == g.shape
    assert int(m[44, 54]) == 255


def test_bgr_channels_average_d2() -> None:
    g = np.dstack([textured((48, 56), s) for s in (1, 2, 3)])
    us = UnitSpace.synthesize(g, 7, 1, n=12, seed=0, channels="bgr")
    assert us.shape == (3, 48, 56)
    tr = NsoartcTransform(g, us, k=7, channels="bgr")
    x = g.copy()
    x[20:26, 20:26, 2] = 0  # red channel only
    feats = tr.features(x)
    d2 = [us.channel(c).score_squared(*feats[c]) for c in range(3)]
    expected = np.sqrt((d2[0] + d2[1] + d2[2]) / 3)
    np.testing.assert_allclose(tr.distance(x), expected, rtol=1e-5)
    assert float(tr.distance(x)[23, 23]) > 3 * float(tr.distance(g).max())


def test_mismatched_unit_space_rejected() -> None:
    g = textured((40, 40))
    us = UnitSpace.synthesize(g, 5, 1, n=3)
    with pytest.raises(ValueError, match="unit space"):
        NsoartcTransform(g, us, k=5, stride=2)
    with pytest.raises(ValueError, match="built with k=5"):
        NsoartcTransform(g, us, k=7)
    with pytest.raises(ValueError, match="odd"):
        rt_features(g, g, k=4)
    tr = NsoartcTransform(g, us, k=5)
    with pytest.raises(ValueError, match="shape"):
        tr.distance(g[:30])


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_transform_equals_score_of_features(stride: int, dtype: type) -> None:
    """The fused, banded hot path equals UnitSpace.score(rt_features(...)), bands included."""
    g = textured((300, 90), seed=8)  # > 128 rows: several bands
    us = UnitSpace.synthesize(g, 7, stride, n=9, seed=2)
    tr = NsoartcTransform(g.astype(dtype), us, k=7, stride=stride)
    x = g.copy()
    x[100:140, 30:50] = 255
    x = x.astype(dtype)
    expected = us.score(*rt_features(g.astype(dtype), x, k=7, stride=stride))
    np.testing.assert_allclose(tr.distance_windows(x), expected, rtol=1e-4, atol=1e-3)


def test_spread_widens_tolerance_near_edges() -> None:
    g = np.zeros((40, 40), np.uint8)
    g[:, 20:] = 255  # one vertical edge
    frames = list(synth_good_frames(g, n=12, seed=0))
    feats = [rt_features(g, f, k=5) for f in frames]
    base = UnitSpace.fit(feats, shrink=0.0)
    wide = UnitSpace.fit(feats, shrink=0.0, spread=3)
    var_base = base.inv_c / (base.inv_a * base.inv_c - base.inv_b**2)  # Σ_11
    var_wide = wide.inv_c / (wide.inv_a * wide.inv_c - wide.inv_b**2)
    assert np.all(var_wide >= var_base * (1 - 1e-4))
    assert float(var_wide[:, 13].mean()) > 2 * float(var_base[:, 13].mean())  # 3 px off the edge
