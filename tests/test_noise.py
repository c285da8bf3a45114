"""phantoms.noise: statistics, determinism, dtypes, descriptions and bad input of the noise models."""
from __future__ import annotations

import math
import pickle

import pytest
import torch

import known_ops as ko
from phantoms.noise import GaussianNoise, NoNoise, PoissonNoise, noise_from_dict
from phantoms.random_ellipses import RandomEllipsesDataset


def test_gaussian_noise_is_zero_mean_with_std_level_times_mean_abs_per_item():
    # Three items of very different size: each gets its own noise level.
    y = torch.stack([torch.full((200, 200), v, dtype=torch.float64) for v in (1.0, -4.0, 20.0)])
    noisy = GaussianNoise(0.05)(y, 0)
    e = noisy - y
    for k, v in enumerate((1.0, 4.0, 20.0)):
        assert abs(float(e[k].mean())) < 4 * 0.05 * v / 200  # 4 standard errors of the mean
        assert float(e[k].std()) == pytest.approx(0.05 * v, rel=0.02)


def test_gaussian_noise_on_a_sinogram_matches_the_definition():
    y = torch.rand(2, 30, 40, dtype=torch.float64) * torch.linspace(0, 3, 40, dtype=torch.float64)
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    noisy = GaussianNoise(0.1)(y, gen_a)
    expected = y + 0.1 * y.abs().mean(dim=(-2, -1), keepdim=True) * torch.randn(y.shape, generator=gen_b, dtype=torch.float64)
    torch.testing.assert_close(noisy, expected, rtol=0, atol=0)
    assert torch.equal(GaussianNoise(0.1)(torch.zeros(3, 4), 1), torch.zeros(3, 4))


def test_gaussian_ndim_3_takes_the_mean_over_a_whole_3d_projection_set():
    y = torch.ones(1, 4, 50, 50, dtype=torch.float64)
    y[:, 0] = 10.0  # one bright view: with ndim=3 it raises the level of every view
    e = GaussianNoise(0.1, ndim=3)(y, 0) - y
    assert float(e[0, 1:].std()) == pytest.approx(0.1 * float(y.mean()), rel=0.05)


def test_poisson_counts_have_variance_equal_to_their_mean():
    y = torch.full((400, 400), 0.5, dtype=torch.float64)
    counts = PoissonNoise(1000.0).counts(y, 0)
    rate = 1000.0 * math.exp(-0.5)
    assert float(counts.mean()) == pytest.approx(rate, rel=2e-3)
    assert float(counts.var()) == pytest.approx(rate, rel=0.02)
    assert torch.equal(counts, counts.round())


def test_poisson_log_transform_is_nearly_unbiased_at_high_dose_with_the_predicted_variance():
    y = torch.full((300, 300), 2.0, dtype=torch.float64)
    for photons in (1e5, 1e7):
        noisy = PoissonNoise(photons)(y, 1)
        rate = photons * math.exp(-2.0)
        assert abs(float(noisy.mean()) - 2.0) < 1e-3 * math.sqrt(1e5 / photons) + 1 / rate
        assert float(noisy.var()) == pytest.approx(1 / rate, rel=0.02)


def test_poisson_units_and_zero_counts():
    # Line integrals in mm of a material with mu = 0.02 / mm: the same optical depth as y = 1 with mu_scale 1.
    y = torch.full((200, 200), 50.0, dtype=torch.float64)
    noisy = PoissonNoise(1e4, mu_scale=0.02)(y, 2)
    assert float(noisy.mean()) == pytest.approx(50.0, rel=2e-3)
    starved = PoissonNoise(100.0)(torch.full((10, 10), 60.0), 3)  # exp(-60) * 100: no photon arrives
    torch.testing.assert_close(starved, torch.full((10, 10), math.log(100.0)))


@pytest.mark.parametrize("model", [GaussianNoise(0.05), PoissonNoise(1e3), NoNoise()], ids=repr)
def test_same_seed_same_noise_and_dtypes_kept(model):
    y = torch.rand(3, 8, 12, dtype=torch.float64)
    a = model(y, 7)
    b = model(y, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    if not isinstance(model, NoNoise):
        assert not torch.equal(model(y, 8), a)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        out = model(y.to(dtype), 7)
        assert out.dtype == dtype and out.shape == y.shape and out.device == y.device
    # Draws are made in float64 whatever the dtype: float32 gives the same noise up to rounding.
    torch.testing.assert_close(model(y.float(), 7).double(), a, rtol=1e-4, atol=1e-4)


def test_descriptions_round_trip_and_models_pickle():
    for model in (GaussianNoise(0.05), GaussianNoise(0.01, ndim=3), PoissonNoise(1e4, mu_scale=0.02), NoNoise()):
        d = model.to_dict()
        assert noise_from_dict(d) == model
        assert pickle.loads(pickle.dumps(model)) == model
    assert noise_from_dict(None) == NoNoise()
    assert noise_from_dict({"type": "gaussian", "level": 0.05}) == GaussianNoise(0.05)


def test_noise_in_random_ellipses_dataset_is_deterministic_per_index():
    vol = ko.Volume((16, 16))
    geo = ko.ParallelBeam2D(ko.uniform_angles(6), 23)
    clean = RandomEllipsesDataset(4, vol, geo, seed=3, n_ellipses=3, supersample=1)
    noisy = RandomEllipsesDataset(4, vol, geo, seed=3, n_ellipses=3, supersample=1, noise=GaussianNoise(0.05))
    x0, y0 = clean[2]
    x1, y1 = noisy[2]
    assert torch.equal(x0, x1) and not torch.equal(y0, y1)
    assert torch.equal(noisy[2][1], y1)
    rel = float((y1 - y0).std() / y0.abs().mean())
    assert 0.03 < rel < 0.07


def test_bad_input_is_rejected_with_clear_errors():
    with pytest.raises(ValueError, match="level"):
        GaussianNoise(-0.1)
    with pytest.raises(TypeError, match="level"):
        GaussianNoise("5%")
    with pytest.raises(ValueError, match="ndim"):
        GaussianNoise(0.1, ndim=4)
    with pytest.raises(ValueError, match="photons"):
        PoissonNoise(0)
    with pytest.raises(ValueError, match="mu_scale"):
        PoissonNoise(1e4, mu_scale=-1)
    with pytest.raises(ValueError, match="photons"):
        PoissonNoise(float("inf"))
    with pytest.raises(TypeError, match="floating-point"):
        GaussianNoise(0.1)(torch.ones(3, 3, dtype=torch.int64), 0)
    with pytest.raises(TypeError, match="generator"):
        GaussianNoise(0.1)(torch.ones(3, 3), "seed")
    with pytest.raises(TypeError, match="torch.Tensor"):
        PoissonNoise(10.0)([1.0, 2.0], 0)
    with pytest.raises(ValueError, match="noise type"):
        noise_from_dict({"type": "speckle"})
    with pytest.raises(ValueError, match="unknown key"):
        noise_from_dict({"type": "gaussian", "level": 0.1, "sigma": 2})
