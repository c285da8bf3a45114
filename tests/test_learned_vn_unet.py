"""VariationalNetwork and UNetPostProcessing (recon.learned): shapes, gradients, gradcheck, the start
at FBP, overfitting one batch, serialisation, autocast, torch.compile, float64, 3D, bad arguments.

Tiny problems (16x16 images, 12 parallel views; 8x8 for gradcheck), run on one thread: on a shared
2-core machine, two OpenMP threads per op made these small problems 5-50x slower. The timing on
Adler and Oektem's set-up (128x128, 30 views, batch 5) runs with KNOWN_OPS_TIMING=1 (``-s`` prints).
"""
from __future__ import annotations

import copy
import math
import os
import pickle
import time

import pytest
import torch
from torch import nn

import known_ops as ko
import phantoms
from recon.analytic import FBP
from recon.learned._common import count_parameters
from recon.learned.fbp import LearnedFBP
from recon.learned.unet import UNet, UNetPostProcessing
from recon.learned.variational import VariationalNetwork, _GaussianRBFSum, dct_filters

VOL = ko.Volume((16, 16))
GEO = ko.ParallelBeam2D(ko.uniform_angles(12), 23)
SMALL_VOL = ko.Volume((8, 8))
SMALL_GEO = ko.ParallelBeam2D(ko.uniform_angles(6), 11)

# Small instances: every model feature, a fraction of the default cost.
VN_SMALL = dict(n_stages=3, n_filters=8, kernel_size=5, n_rbf=9)
UNET_SMALL = dict(features=8, depth=2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def relative(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def images(n=2, volume=VOL):
    return phantoms.random_ellipse_images(n, volume, generator=0, n_ellipses=8, intensity_range=(0, 1))


def data(n=2, volume=VOL, geometry=GEO):
    x = images(n, volume)
    return x, ko.RayTransform(volume, geometry)(x)


def make(kind, volume=VOL, geometry=GEO, **kwargs):
    if kind == "vn":
        return VariationalNetwork(volume, geometry, **{**VN_SMALL, **kwargs})
    return UNetPostProcessing(volume, geometry, **{**UNET_SMALL, **kwargs})


def randomise(model, scale=0.1):
    """Perturb every parameter (the U-Net's zero last layer too), so that comparisons are not trivial."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
    return model


KINDS = ("vn", "unet")


# --- shapes, batches and gradients ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_output_shapes_and_batch_dims(kind):
    model = randomise(make(kind))
    _, y = data(3)
    y = torch.stack([y, 2 * y], dim=1)  # (B, C, n_views, det_count)
    out = model(y)
    assert out.shape == (3, 2) + VOL.shape and out.dtype == torch.float32
    # every leading dim is a batch dim: items do not couple
    torch.testing.assert_close(out[1, 0], model(y[1, 0]), rtol=1e-5, atol=1e-6)
    assert model(y[0]).shape == (2,) + VOL.shape


def test_vn_gradients_reach_every_parameter_and_no_operator():
    model = make("vn")
    x, y = data()
    (model(y) - x).square().mean().backward()
    named = dict(model.named_parameters())
    assert set(named) == {"kernels", "rbf_weights", "lambda_raw"}
    for name, p in named.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        per_stage = p.grad.reshape(model.n_stages, -1).abs().sum(1)
        assert (per_stage > 0).all(), name  # every stage's parameters
    # the known operators are frozen: no parameters that require gradients
    assert not any(p.requires_grad for p in model.initial.parameters())
    assert not list(model.operator.parameters())
    assert count_parameters(model) == model.n_stages * (model.n_filters * (5 * 5 + 9) + 1)


def test_unet_gradients_reach_every_parameter_after_one_step():
    model = make("unet")
    x, y = data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    (model(y) - x).square().mean().backward()
    # at initialisation only the zero last layer has a gradient (it multiplies all others by 0)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert (p.grad.abs().sum() > 0) == name.startswith("unet.last"), name
    opt.step()
    opt.zero_grad()
    (model(y) - x).square().mean().backward()
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert not list(model.fbp.parameters())


# --- gradcheck (float64) ----------------------------------------------------------------------------


def test_rbf_window_equals_the_full_sum_and_gradcheck():
    u = (torch.randn(2, 3, 5, 4, dtype=torch.float64) * 12 + 15)  # inside, near and far outside the grid
    w = torch.randn(3, 31, dtype=torch.float64)
    full = sum(w[:, j].reshape(1, -1, 1, 1) * torch.exp(-0.5 * (u - j) ** 2) for j in range(31))
    torch.testing.assert_close(_GaussianRBFSum.apply(u, w), full, rtol=0, atol=1e-14)
    torch.testing.assert_close(_GaussianRBFSum.apply(u.float(), w.float()), full.float(), rtol=0, atol=2e-6)
    u = (torch.randn(2, 3, 3, 3, dtype=torch.float64) * 3 + 2).requires_grad_()
    w = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_GaussianRBFSum.apply, (u, w))


def test_dct_filters_are_orthonormal_and_zero_mean():
    for ndim, n in ((2, 24), (3, 24), (2, 10)):
        k = dct_filters(n, 3 if n == 10 else 7, ndim)
        flat = k.reshape(n, -1)
        torch.testing.assert_close(flat.sum(1), torch.zeros(n, dtype=torch.float64), atol=1e-12, rtol=0)
        gram = flat @ flat.T
        atoms = min(n, flat.shape[1] - 1)  # 3x3: 8 atoms, then random unit-norm zero-mean filters
        torch.testing.assert_close(gram[:atoms, :atoms], torch.eye(atoms, dtype=torch.float64), atol=1e-12, rtol=0)
        torch.testing.assert_close(gram.diagonal(), torch.ones(n, dtype=torch.float64))


def test_vn_gradcheck_input_and_parameters():
    model = VariationalNetwork(SMALL_VOL, SMALL_GEO, n_stages=2, n_filters=3, kernel_size=3, n_rbf=5).double()
    with torch.no_grad():
        model.kernels.mul_(0.5)  # inside the norm bound: the reparametrisation is smooth there
        model.rbf_weights.normal_(0, 0.3)  # a non-linear phi'
        model.lambda_raw.normal_(0, 1)
    _, y = data(1, SMALL_VOL, SMALL_GEO)
    y = y[0].double().requires_grad_()
    assert torch.autograd.gradcheck(model, (y,))
    names = ("kernels", "rbf_weights", "lambda_raw")
    params = tuple(getattr(model, n).detach().clone().requires_grad_() for n in names)

    def f(*p):
        return torch.func.functional_call(model, dict(zip(names, p)), (y.detach(),))

    assert torch.autograd.gradcheck(f, params)


def test_unet_gradcheck_input_and_parameters():
    model = UNetPostProcessing(SMALL_VOL, SMALL_GEO, features=2, depth=2).double()
    randomise(model, scale=0.5)
    _, y = data(1, SMALL_VOL, SMALL_GEO)
    y = y[0].double().requires_grad_()
    assert torch.autograd.gradcheck(model, (y,))
    names = ("unet.down.0.0.weight", "unet.up.0.0.weight", "unet.last.weight")
    named = dict(model.named_parameters())
    params = tuple(named[n].detach().clone().requires_grad_() for n in names)

    def f(*p):
        return torch.func.functional_call(model, dict(zip(names, p)), (y.detach(),))

    assert torch.autograd.gradcheck(f, params)


# --- the start --------------------------------------------------------------------------------------


def test_unet_starts_as_fbp_exactly():
    model = UNetPostProcessing(VOL, GEO)  # the defaults: features 32, depth 4 (16 = 2^4: no padding)
    _, y = data()
    reference = FBP(VOL, GEO, filter="hann")(y)
    assert torch.equal(model(y), reference)
    odd = UNetPostProcessing(ko.Volume((13, 11)), GEO, features=4, depth=3)  # padded to 16x16 and cropped
    y_odd = ko.RayTransform(ko.Volume((13, 11)), GEO)(torch.rand(2, 13, 11))
    assert torch.equal(odd(y_odd), odd.fbp(y_odd))


def test_vn_starts_close_to_fbp():
    model = VariationalNetwork(VOL, GEO)  # the defaults
    x, y = data()
    fbp = FBP(VOL, GEO)(y)
    out = model(y)
    difference = relative(out, fbp)
    print(f"\nVN (defaults) vs FBP at initialisation, 16x16, 12 views: relative difference {difference:.4f}; "
          f"error vs truth FBP {relative(fbp, x):.4f}, VN {relative(out, x):.4f}")
    assert 1e-4 < difference < 0.1
    # without the smoothing and with lambda ~ 0 it is the FBP
    plain = VariationalNetwork(VOL, GEO, init_smoothing=0.0, init_lambda=1e-12)
    torch.testing.assert_close(plain(y), fbp, rtol=0, atol=1e-6)


# --- training ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, lr", [("vn", 3e-2), ("unet", 3e-3)])
def test_overfits_one_batch(kind, lr):
    torch.manual_seed(0)
    model = make(kind)
    x, y = data(2)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    first = None
    for step in range(400):
        opt.zero_grad()
        loss = (model(y) - x).square().mean()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
        if loss.item() < first / 10:
            break
    print(f"\n{kind}: loss {first:.3g} -> {loss.item():.3g} in {step + 1} Adam steps")
    assert loss.item() < first / 10


def test_vn_trains_a_learned_fbp_initial():
    initial = LearnedFBP(VOL, GEO)
    weight = initial.redundancy_weighting.weight
    before = weight.detach().clone()
    model = make("vn", initial=initial, train_initial=True)
    assert count_parameters(model) == count_parameters(make("vn")) + weight.numel()
    x, y = data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        (model(y) - x).square().mean().backward()
        opt.step()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    assert not torch.equal(weight.detach(), before)

    frozen = LearnedFBP(VOL, GEO)
    model = make("vn", initial=frozen)  # train_initial=False: frozen, and kept in eval mode
    assert not any(p.requires_grad for p in frozen.parameters())
    assert count_parameters(model) == count_parameters(make("vn"))
    model.train()
    assert model.training and not model.initial.training
    torch.testing.assert_close(model(y), make("vn")(y))  # an untrained LearnedFBP is the FBP


# --- serialisation, precision, compile --------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_deepcopy_and_pickle_round_trips(kind):
    model = randomise(make(kind))
    _, y = data()
    expected = model(y)
    torch.manual_seed(123)
    fresh = make(kind)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(y), expected)
    assert torch.equal(copy.deepcopy(model)(y), expected)
    assert torch.equal(pickle.loads(pickle.dumps(model))(y), expected)


@pytest.mark.parametrize("kind", KINDS)
def test_autocast_bfloat16_forward_backward(kind):
    model = randomise(make(kind))
    x, y = data()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(y)
        loss = (out.float() - x).square().mean()
    loss.backward()
    assert out.shape == (2,) + VOL.shape and torch.isfinite(out).all()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert relative(out.float(), model(y)) < 0.05  # bfloat16 convolutions, float32 operators


@pytest.mark.parametrize("kind", KINDS)
def test_torch_compile_aot_eager_matches_eager(kind):
    model = randomise(make(kind, **({"n_stages": 2} if kind == "vn" else {})))
    _, y = data()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(y)
    torch.testing.assert_close(out, model(y), rtol=1e-5, atol=1e-6)
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_double(kind):
    single = randomise(make(kind))
    model = copy.deepcopy(single).double()
    x, y = data()
    out = model(y.double())
    assert out.dtype == torch.float64
    (out - x.double()).square().mean().backward()
    assert all(p.dtype == torch.float64 and torch.isfinite(p.grad).all() for p in model.parameters())
    torch.testing.assert_close(out.float(), single(y), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_3d(kind):
    vol = ko.Volume((6, 6, 6))
    geo = ko.ParallelBeam3D(ko.uniform_angles(6), (6, 9))
    kwargs = dict(n_stages=1, n_filters=3, kernel_size=3, n_rbf=5) if kind == "vn" else dict(features=2, depth=1)
    model = randomise(make(kind, vol, geo, **kwargs))
    x = torch.rand(2, 6, 6, 6)
    y = ko.RayTransform(vol, geo)(x)
    out = model(y)
    assert out.shape == (2, 6, 6, 6)
    (out - x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_unet_alone_pads_and_crops():
    net = randomise(UNet(1, 2, features=2, depth=3))
    for shape in ((1, 1, 8, 8), (2, 1, 7, 13), (1, 1, 1, 1)):
        assert net(torch.rand(shape)).shape == (shape[0], 2) + shape[2:]
    with pytest.raises(ValueError, match="x must have shape"):
        net(torch.rand(8, 8))


# --- bad arguments ----------------------------------------------------------------------------------


BAD_ARGUMENTS = [
    ("vn", dict(n_stages=0), ValueError, "n_stages"),
    ("vn", dict(n_filters=2.5), TypeError, "n_filters"),
    ("vn", dict(kernel_size=4), ValueError, "kernel_size"),
    ("vn", dict(n_rbf=1), ValueError, "n_rbf"),
    ("vn", dict(v_max=-1.0), ValueError, "v_max"),
    ("vn", dict(v_max="1"), TypeError, "v_max"),
    ("vn", dict(init_lambda=0.0), ValueError, "init_lambda"),
    ("vn", dict(init_smoothing=-0.1), ValueError, "init_smoothing"),
    ("vn", dict(initial="sirt"), ValueError, "initial"),
    ("vn", dict(initial=3), TypeError, "initial"),
    ("vn", dict(train_initial=True), ValueError, "train_initial"),
    ("vn", dict(train_initial="yes"), TypeError, "train_initial"),
    ("vn", dict(initial=nn.Identity(), train_initial=True), ValueError, "train_initial"),
    ("vn", dict(fbp_filter="gauss"), ValueError, "fbp_filter"),
    ("vn", dict(fbp_cutoff=2.0), ValueError, "fbp_cutoff"),
    ("vn", dict(operator_norm=0.0), ValueError, "operator_norm"),
    ("vn", dict(operator=ko.RayTransform(SMALL_VOL, SMALL_GEO)), ValueError, "operator"),
    ("unet", dict(features=0), ValueError, "features"),
    ("unet", dict(depth=0), ValueError, "depth"),
    ("unet", dict(depth=2.0), TypeError, "depth"),
    ("unet", dict(batch_norm=1), TypeError, "batch_norm"),
    ("unet", dict(fbp_filter=3), TypeError, "fbp_filter"),
    ("unet", dict(fbp_cutoff=0.0), ValueError, "fbp_cutoff"),
    ("unet", dict(operator=ko.RayTransform(SMALL_VOL, SMALL_GEO)), ValueError, "operator"),
]


@pytest.mark.parametrize("kind, kwargs, error, name", BAD_ARGUMENTS, ids=[f"{k}-{n}" for k, _, _, n in BAD_ARGUMENTS])
def test_bad_arguments_name_the_parameter(kind, kwargs, error, name):
    with pytest.raises(error, match=name):
        make(kind, **kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_volume_and_input(kind):
    with pytest.raises(TypeError, match="volume"):
        make(kind, volume=(16, 16))
    model = make(kind)
    with pytest.raises(ValueError, match="y must have shape"):
        model(torch.rand(2, 11, 23))
    with pytest.raises(TypeError, match="y must be float32 or float64"):
        model(torch.ones(2, 12, 23, dtype=torch.int64))


def test_vn_initial_with_wrong_output_names_initial():
    model = make("vn", initial=nn.Identity())
    with pytest.raises(ValueError, match="initial must map"):
        model(torch.rand(2, 12, 23))


# --- timing on Adler and Oektem's set-up (printed, not asserted) -------------------------------------


@pytest.mark.skipif(os.environ.get("KNOWN_OPS_TIMING") != "1", reason="timing: set KNOWN_OPS_TIMING=1 (slow)")
@pytest.mark.parametrize("threads", [1, 2])
def test_step_time_on_adler_setup(threads):
    torch.set_num_threads(threads)
    vol = ko.Volume((128, 128))  # Adler and Oektem's set-up (docs/learned.md)
    geo = ko.ParallelBeam2D(ko.uniform_angles(30, math.pi), 183, 0.9892)
    x = phantoms.random_ellipse_images(5, vol, generator=0)
    y = ko.RayTransform(vol, geo)(x)
    for model in (VariationalNetwork(vol, geo), UNetPostProcessing(vol, geo)):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            (model(y) - x).square().mean().backward()
            times.append(time.perf_counter() - start)
        print(f"\n{type(model).__name__} ({count_parameters(model)} parameters), batch 5, 128x128, 30 views, "
              f"{threads} thread(s): forward+backward {min(times):.2f} s (best of 3; {', '.join(f'{t:.2f}' for t in times)})")
    torch.set_num_threads(1)
