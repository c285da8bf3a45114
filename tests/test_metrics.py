"""Image quality metrics (recon.metrics): agreement with scikit-image, batching, gradients, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import recon
from recon.metrics import psnr, rmse, ssim

skm = pytest.importorskip("skimage.metrics", reason="scikit-image is needed for the cross-checks")


def _pair(shape, seed=0, dtype=torch.float64):
    """A random reference and a noisy, slightly biased copy of it (values of order 1)."""
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(shape, generator=g, dtype=torch.float64) * 2.0 - 0.3
    x = ref + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64) + 0.02
    return x.to(dtype), ref.to(dtype)


def _range(ref: np.ndarray) -> float:
    return float(ref.max() - ref.min())


SHAPES_2D = [(32, 32), (23, 41), (7, 7), (9, 30)]
SSIM_OPTIONS = [
    {},
    {"win_size": 5},
    {"win_size": 3, "K1": 0.02, "K2": 0.05},
    {"use_sample_covariance": False},
    {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False},  # Wang et al. 2004
    {"gaussian_weights": True, "sigma": 1.0},
]


@pytest.mark.parametrize("shape", SHAPES_2D)
def test_psnr_and_rmse_match_scikit_image(shape):
    x, ref = _pair(shape)
    xn, rn = x.numpy(), ref.numpy()
    assert abs(float(psnr(x, ref)) - skm.peak_signal_noise_ratio(rn, xn, data_range=_range(rn))) < 1e-6
    assert abs(float(psnr(x, ref, data_range=3.0)) - skm.peak_signal_noise_ratio(rn, xn, data_range=3.0)) < 1e-6
    assert abs(float(rmse(x, ref)) - math.sqrt(skm.mean_squared_error(rn, xn))) < 1e-6


@pytest.mark.parametrize("options", SSIM_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
@pytest.mark.parametrize("shape", SHAPES_2D)
def test_ssim_matches_scikit_image(shape, options):
    if options.get("gaussian_weights") and min(shape) < 2 * int(3.5 * options["sigma"] + 0.5) + 1:
        pytest.skip("image smaller than the Gaussian window")
    x, ref = _pair(shape, seed=1)
    xn, rn = x.numpy(), ref.numpy()
    expected = skm.structural_similarity(rn, xn, data_range=_range(rn), **options)
    assert abs(float(ssim(x, ref, **options)) - expected) < 1e-6
    expected = skm.structural_similarity(rn, xn, data_range=2.5, **options)
    assert abs(float(ssim(x, ref, data_range=2.5, **options)) - expected) < 1e-6


@pytest.mark.parametrize("options", [{}, {"win_size": 3}, {"gaussian_weights": True, "sigma": 1.0, "use_sample_covariance": False}])
def test_3d_metrics_match_scikit_image(options):
    x, ref = _pair((9, 10, 11), seed=2)
    xn, rn = x.numpy(), ref.numpy()
    assert abs(float(ssim(x, ref, ndim=3, **options)) - skm.structural_similarity(rn, xn, data_range=_range(rn), **options)) < 1e-6
    assert abs(float(psnr(x, ref, ndim=3)) - skm.peak_signal_noise_ratio(rn, xn, data_range=_range(rn))) < 1e-6
    assert abs(float(rmse(x, ref, ndim=3)) - math.sqrt(skm.mean_squared_error(rn, xn))) < 1e-6


def test_ssim_of_a_ct_like_image():
    """A piecewise-constant phantom and a blurred, noisy version: the regime of CT benchmarks."""
    import phantoms
    import known_ops as ko

    vol = ko.Volume((64, 64))
    ref = phantoms.shepp_logan(vol).double()
    blurred = torch.nn.functional.avg_pool2d(ref[None, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0]
    x = blurred + 0.02 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    rn, xn = ref.numpy(), x.numpy()
    for options in SSIM_OPTIONS:
        assert abs(float(ssim(x, ref, **options)) - skm.structural_similarity(rn, xn, data_range=_range(rn), **options)) < 1e-6
    assert abs(float(psnr(x, ref)) - skm.peak_signal_noise_ratio(rn, xn, data_range=1.0)) < 1e-6  # range of the phantom: 1


@pytest.mark.parametrize("metric", [psnr, ssim, rmse], ids=["psnr", "ssim", "rmse"])
def test_batches_equal_per_image_values(metric):
    x, ref = _pair((2, 3, 20, 24), seed=4)
    batched = metric(x, ref)
    assert batched.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert torch.allclose(batched[i, j], metric(x[i, j], ref[i, j]), rtol=1e-12, atol=0)


def test_reference_broadcasts_over_the_batch():
    x, ref = _pair((4, 20, 24), seed=5)
    single_ref = ref[0]
    for metric in (psnr, ssim, rmse):
        values = metric(x, single_ref)
        assert values.shape == (4,)
        assert torch.allclose(values[2], metric(x[2], single_ref), rtol=1e-12)


def test_data_range_per_item_tensor():
    x, ref = _pair((3, 16, 16), seed=6)
    dr = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    for metric in (psnr, ssim):
        values = metric(x, ref, data_range=dr)
        for k in range(3):
            assert torch.allclose(values[k], metric(x[k], ref[k], data_range=float(dr[k])), rtol=1e-12)


def test_default_data_range_is_per_image_max_minus_min_of_the_reference():
    x, ref = _pair((2, 16, 16), seed=7)
    ref = ref * torch.tensor([1.0, 5.0], dtype=torch.float64)[:, None, None]
    values = psnr(x, ref)
    for k in range(2):
        expected = float(psnr(x[k], ref[k], data_range=float(ref[k].max() - ref[k].min())))
        assert abs(float(values[k]) - expected) < 1e-12


def test_identical_images():
    _, ref = _pair((16, 16))
    assert float(psnr(ref, ref)) == math.inf
    assert abs(float(ssim(ref, ref)) - 1.0) < 1e-12
    assert float(rmse(ref, ref)) == 0.0


def test_float32_agrees_with_float64():
    x, ref = _pair((2, 32, 32), seed=8)
    for metric in (psnr, ssim, rmse):
        v32 = metric(x.float(), ref.float())
        assert v32.dtype == torch.float32
        assert torch.allclose(v32.double(), metric(x, ref), rtol=1e-5)


def test_metrics_are_differentiable():
    x, ref = _pair((2, 9, 10), seed=9)
    x = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: ssim(t, ref, data_range=2.0, win_size=3), (x,))
    assert torch.autograd.gradcheck(lambda t: ssim(t, ref, gaussian_weights=True, sigma=0.8), (x,))
    assert torch.autograd.gradcheck(lambda t: psnr(t, ref), (x,))
    assert torch.autograd.gradcheck(lambda t: rmse(t, ref), (x,))


def test_exported_at_the_package_root():
    assert recon.psnr is psnr and recon.ssim is ssim and recon.rmse is rmse and recon.metrics.ssim is ssim


X, REF = _pair((16, 16))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: psnr(X.numpy(), REF), TypeError, "x must be a torch.Tensor"),
        (lambda: ssim(X, REF.numpy()), TypeError, "ref must be a torch.Tensor"),
        (lambda: rmse(X.to(torch.int64), REF), TypeError, "x must be a floating-point tensor"),
        (lambda: psnr(X[:, :15], REF), ValueError, "x and ref must have the same image shape"),
        (lambda: ssim(torch.zeros(2, 16, 16, dtype=torch.float64), torch.zeros(3, 16, 16, dtype=torch.float64)), ValueError, "do not broadcast"),
        (lambda: psnr(X[0], REF[0]), ValueError, "x must have at least ndim=2 dims"),
        (lambda: psnr(X, REF, ndim=4), ValueError, "ndim must be 2"),
        (lambda: psnr(X, REF, data_range=0.0), ValueError, "data_range must be positive"),
        (lambda: psnr(X, REF, data_range=-1.0), ValueError, "data_range"),
        (lambda: psnr(X, REF, data_range="1"), TypeError, "data_range"),
        (lambda: psnr(X, REF, data_range=torch.tensor([1.0, 2.0])), ValueError, "data_range"),
        (lambda: ssim(X, REF, data_range=torch.tensor(-1.0)), ValueError, "data_range must be positive"),
        (lambda: ssim(X, REF, win_size=4), ValueError, "win_size must be an odd"),
        (lambda: ssim(X, REF, win_size=2.0), TypeError, "win_size"),
        (lambda: ssim(X, REF, win_size=17), ValueError, "win_size 17 exceeds the image shape"),
        (lambda: ssim(X, REF, gaussian_weights=True, win_size=7), ValueError, "win_size must be None or 11"),
        (lambda: ssim(X, REF, gaussian_weights=True, sigma=3.0), ValueError, "exceeds the image shape"),
        (lambda: ssim(X, REF, sigma=0.0), ValueError, "sigma"),
        (lambda: ssim(X, REF, K1=-0.01), ValueError, "K1"),
        (lambda: ssim(X, REF, K2="a"), TypeError, "K2"),
        (lambda: ssim(X, REF, gaussian_weights=1), TypeError, "gaussian_weights"),
        (lambda: ssim(X, REF, use_sample_covariance=None), TypeError, "use_sample_covariance"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
