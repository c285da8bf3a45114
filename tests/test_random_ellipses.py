"""Random ellipse phantoms: determinism, the documented distribution, image/sinogram consistency, the dataset."""
import math

import pytest
import torch

import known_ops as ko
import phantoms
from phantoms import Ellipse


def _table(ellipses):
    return torch.tensor([tuple(e) for e in ellipses], dtype=torch.float64)


# --- determinism -------------------------------------------------------------------------------------


def test_same_seed_same_ellipses_different_seeds_differ():
    first = phantoms.random_ellipses(generator=3)
    assert len(first) == 50 and all(isinstance(e, Ellipse) for e in first)
    assert phantoms.random_ellipses(generator=3) == first
    assert phantoms.random_ellipses(generator=torch.Generator().manual_seed(3)) == first
    assert phantoms.random_ellipses(generator=4) != first
    # One generator gives a stream of different phantoms.
    gen = torch.Generator().manual_seed(3)
    assert phantoms.random_ellipses(generator=gen) == first
    assert phantoms.random_ellipses(generator=gen) != first
    # None follows torch's global RNG.
    torch.manual_seed(11)
    a = phantoms.random_ellipses()
    torch.manual_seed(11)
    assert phantoms.random_ellipses() == a


def test_scale_only_multiplies_lengths():
    unit = phantoms.random_ellipses(generator=5)
    assert phantoms.random_ellipses(generator=5, scale=64.0) == [e.scaled(64.0) for e in unit]


# --- the distribution --------------------------------------------------------------------------------


def test_square_region_contains_every_ellipse_and_angles_in_range():
    t = _table(phantoms.random_ellipses(4000, generator=0))
    intensity, a, b, x0, y0, theta = t.unbind(1)
    assert bool((a > 0).all() and (b > 0).all())
    assert bool((theta >= 0).all() and (theta < 360).all())
    rad = torch.deg2rad(theta)
    half_x = torch.hypot(a * torch.cos(rad), b * torch.sin(rad))
    half_y = torch.hypot(a * torch.sin(rad), b * torch.cos(rad))
    assert float((x0.abs() + half_x).max()) <= 1 + 1e-12
    assert float((y0.abs() + half_y).max()) <= 1 + 1e-12
    # Centres uniform on the square: the corners are populated.
    assert float(x0.abs().max()) > 0.99 and float((x0.abs() > 0.9).double().mean()) > 0.05


def test_disc_region_contains_every_ellipse():
    t = _table(phantoms.random_ellipses(4000, generator=1, region="disc"))
    _, a, b, x0, y0, _ = t.unbind(1)
    assert float((torch.hypot(x0, y0) + torch.maximum(a, b)).max()) <= 1 + 1e-12
    # Uniform on the disc: a quarter of the centres within radius 1/2.
    assert abs(float((torch.hypot(x0, y0) < 0.5).double().mean()) - 0.25) < 0.03


def test_reference_intensity_and_axis_laws():
    # Intensity U(-1/2, 1/2) * Exp(mean 0.4): mean 0, E|v| = 0.25 * 0.4 = 0.1, E v^2 = (1/12) * 2 * 0.4^2.
    v = _table(phantoms.random_ellipses(20000, generator=2))[:, 0]
    assert abs(float(v.mean())) < 0.005
    assert abs(float(v.abs().mean()) - 0.1) < 0.004
    assert abs(float(v.square().mean()) - 0.32 / 12) < 0.002
    assert float(v.min()) < 0 < float(v.max())
    # Semi-axes mean_axis * Exp(1): with small axes the containment rarely shrinks them.
    t = _table(phantoms.random_ellipses(20000, generator=3, mean_axis=0.01))
    assert abs(float(t[:, 1:3].mean()) - 0.01) < 0.0003
    assert abs(float(t[:, 1:3].median()) - 0.01 * math.log(2)) < 0.0003


def test_options_max_axis_intensity_range_poisson():
    t = _table(phantoms.random_ellipses(2000, generator=4, max_axis=0.1, intensity_range=(0.2, 0.5)))
    assert float(t[:, 1:3].max()) <= 0.1
    assert float(t[:, 0].min()) >= 0.2 and float(t[:, 0].max()) <= 0.5
    assert abs(float(t[:, 0].mean()) - 0.35) < 0.01
    counts = [len(phantoms.random_ellipses(50, generator=s, poisson=True)) for s in range(40)]
    assert len(set(counts)) > 5 and abs(sum(counts) / 40 - 50) < 4
    assert phantoms.random_ellipses(0, generator=0) == []


# --- images and exact sinograms ----------------------------------------------------------------------


def test_images_are_the_rasterised_stream_of_ellipses():
    vol = ko.Volume(shape=(40, 48), spacing=(2.0, 1.5))
    images = phantoms.random_ellipse_images(2, vol, generator=9, supersample=2, dtype=torch.float64)
    assert images.shape == (2, 40, 48) and images.dtype == torch.float64
    gen = torch.Generator().manual_seed(9)
    scale = phantoms.phantom_scale(vol)
    for k in range(2):
        expected = phantoms.ellipse_image(vol, phantoms.random_ellipses(generator=gen, scale=scale), 2, torch.float64)
        assert torch.equal(images[k], expected)
    # Empty phantoms are zero.
    assert not phantoms.random_ellipse_images(1, vol, generator=0, n_ellipses=0).any()


@pytest.mark.parametrize("region", ["square", "disc"])
def test_joseph_projection_of_images_matches_exact_sinograms(region):
    # Measured (seed 2024, 3 phantoms, 20 views, batch relative L2): square 2.8 % at 128^2 / 2 mm and
    # 1.4 % at 256^2 / 1 mm; disc 1.9 % and 0.9 %: the pixelisation error (about h / R) of the same
    # physical objects, halving with h (ratio 0.50). Bounds with margin: 5 %, and the finer grid at most
    # 0.65 x the coarser (a scale mismatch between image and sinogram would not shrink).
    errors = []
    for n, h in [(128, 2.0), (256, 1.0)]:
        vol = ko.Volume(shape=(n, n), spacing=h)
        geo = ko.ParallelBeam2D(angles=ko.uniform_angles(20, math.pi), det_count=int(1.45 * n), det_spacing=h)
        x = phantoms.random_ellipse_images(3, vol, generator=2024, region=region)
        y = phantoms.random_ellipse_projections(3, geo, volume=vol, generator=2024, region=region)
        assert y.shape == (3, 20, int(1.45 * n)) and y.dtype == torch.float64
        errors.append(float((ko.RayTransform(vol, geo)(x).double() - y).norm() / y.norm()))
    assert errors[0] < 0.05
    assert errors[1] < 0.65 * errors[0]


def test_fan_beam_and_explicit_scale():
    vol = ko.Volume(shape=(128, 128), spacing=2.0)
    fan = ko.FanBeam2D(angles=ko.uniform_angles(30, 2 * math.pi), source_distance=400.0, detector_distance=300.0,
                       det_count=256, det_spacing=2.0)
    x = phantoms.random_ellipse_images(2, vol, generator=2024)
    y = phantoms.random_ellipse_projections(2, fan, generator=2024, scale=128.0)  # phantom_scale(vol) = 128
    assert torch.equal(y, phantoms.random_ellipse_projections(2, fan, volume=vol, generator=2024))
    assert float((ko.RayTransform(vol, fan)(x).double() - y).norm() / y.norm()) < 0.05  # measured 3.5 %


# --- dataset -----------------------------------------------------------------------------------------


def _small_dataset(**kwargs):
    vol = ko.Volume(shape=(32, 32), spacing=4.0)
    geo = ko.ParallelBeam2D(angles=ko.uniform_angles(12, math.pi), det_count=46, det_spacing=4.0)
    return phantoms.RandomEllipsesDataset(6, vol, geo, **kwargs)


def test_dataset_items_are_deterministic_and_consistent():
    ds = _small_dataset(seed=5, n_ellipses=20)
    assert len(ds) == 6
    image, sinogram = ds[3]
    assert image.shape == (32, 32) and sinogram.shape == (12, 46)
    assert image.dtype == sinogram.dtype == torch.float32
    again = _small_dataset(seed=5, n_ellipses=20)
    for i in (3, 0, 3):  # any order, any instance
        assert all(torch.equal(u, v) for u, v in zip(again[i], ds[i]))
    assert all(torch.equal(u, v) for u, v in zip(ds[-1], ds[5]))
    assert not torch.equal(ds[0][0], ds[1][0])
    assert not torch.equal(_small_dataset(seed=6, n_ellipses=20)[3][0], image)
    # The pair is one object: the sinogram is the exact projection of ds.ellipses(3).
    rays = ds.geometry.rays()
    exact = phantoms.ellipse_line_integrals(rays[..., :2], rays[..., 2:], ds.ellipses(3))
    assert torch.equal(sinogram, exact.float())
    assert len(ds.ellipses(3)) == 20
    with pytest.raises(IndexError):
        ds[6]
    with pytest.raises(TypeError, match="index"):
        ds[1.0]


def test_dataset_noise_is_reproducible():
    def noise(sinogram, generator):
        return sinogram + 0.1 * torch.randn(sinogram.shape, generator=generator, dtype=sinogram.dtype)

    noisy, clean = _small_dataset(noise=noise), _small_dataset()
    _, y_noisy = noisy[2]
    _, y_clean = clean[2]
    assert torch.equal(noisy[2][1], y_noisy)
    assert torch.equal(noisy[2][0], clean[2][0])
    assert 0.05 < float((y_noisy - y_clean).std()) < 0.15


def test_dataset_items_match_across_dataloader_workers():
    ds = _small_dataset(seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    images = torch.cat([batch[0] for batch in loader])
    assert torch.equal(images, torch.stack([ds[i][0] for i in range(len(ds))]))


# --- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(generator="x"), TypeError, "generator"),
        (dict(generator=-1), ValueError, "generator"),
        (dict(n_ellipses=-1), ValueError, "n_ellipses"),
        (dict(n_ellipses=2.5), TypeError, "n_ellipses"),
        (dict(scale=0.0), ValueError, "scale"),
        (dict(mean_axis=0.0), ValueError, "mean_axis"),
        (dict(max_axis=-1.0), ValueError, "max_axis"),
        (dict(max_axis="big"), TypeError, "max_axis"),
        (dict(intensity_range=(1.0, 0.0)), ValueError, "intensity_range"),
        (dict(intensity_range=0.5), TypeError, "intensity_range"),
        (dict(region="circle"), ValueError, "region"),
        (dict(poisson=1), TypeError, "poisson"),
    ],
)
def test_random_ellipses_bad_input(kwargs, error, name):
    with pytest.raises(error, match=name):
        phantoms.random_ellipses(**kwargs)


def test_images_projections_dataset_bad_input():
    vol = ko.Volume(shape=(16, 16), spacing=1.0)
    geo = ko.ParallelBeam2D(angles=ko.uniform_angles(4, math.pi), det_count=24)
    with pytest.raises(TypeError, match="volume"):
        phantoms.random_ellipse_images(1, "vol")
    with pytest.raises(ValueError, match="volume"):
        phantoms.random_ellipse_images(1, ko.Volume(shape=(4, 4, 4), spacing=1.0))
    with pytest.raises(ValueError, match="n"):
        phantoms.random_ellipse_images(-1, vol)
    with pytest.raises(TypeError, match="dtype"):
        phantoms.random_ellipse_images(1, vol, dtype=torch.int32)
    with pytest.raises(ValueError, match="supersample"):
        phantoms.random_ellipse_images(1, vol, supersample=0)
    with pytest.raises(ValueError, match="volume"):
        phantoms.random_ellipse_projections(1, geo)
    with pytest.raises(ValueError, match="scale or volume"):
        phantoms.random_ellipse_projections(1, geo, volume=vol, scale=8.0)
    with pytest.raises(TypeError, match="geometry"):
        phantoms.random_ellipse_projections(1, vol, volume=vol)
    with pytest.raises(ValueError, match="length"):
        phantoms.RandomEllipsesDataset(-1, vol, geo)
    with pytest.raises(TypeError, match="noise"):
        phantoms.RandomEllipsesDataset(2, vol, geo, noise=0.1)
    with pytest.raises(ValueError, match="seed"):
        phantoms.RandomEllipsesDataset(2, vol, geo, seed=-3)
    with pytest.raises(ValueError, match="region"):
        phantoms.RandomEllipsesDataset(2, vol, geo, region="box")
    with pytest.raises(TypeError, match="scale"):
        phantoms.RandomEllipsesDataset(2, vol, geo, scale=3.0)
