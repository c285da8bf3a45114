"""The learned models (recon.learned): the checks every model passes, on tiny problems.

Shapes with batch and channel dims, gradients reach every learnable parameter and no known
operator, float64 gradcheck, overfitting one batch, state_dict / deepcopy / pickle round trips,
bf16 autocast, torch.compile graph capture, and each model's own start (LearnedFBP = FBP/FDK).
"""
from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch

import known_ops as ko
import phantoms
import recon
from recon.learned import (
    DerivedRebinning,
    LearnedFBP,
    LearnedGradient,
    LearnedPrimal,
    LearnedPrimalDual,
    count_parameters,
)

VOLUME = ko.Volume((16, 16), 1.0)
PARALLEL = ko.ParallelBeam2D(ko.uniform_angles(10), 23, 1.0)
FAN = ko.FanBeam2D(ko.uniform_angles(12, math.radians(150)), 60.0, 40.0, 31, 1.0)
PARALLEL_30 = ko.ParallelBeam2D(ko.uniform_angles(30), 23, 1.0)
FULL_FAN = ko.FanBeam2D(ko.uniform_angles(12, 2 * math.pi), 60.0, 40.0, 31, 1.0)

# Small but complete instances: every model's structure, few iterations and channels.
FACTORIES = {
    "LearnedFBP": lambda: LearnedFBP(VOLUME, FAN, learn_filter=True, learn_cosine=True),
    "LearnedGradient": lambda: LearnedGradient(VOLUME, PARALLEL, n_iter=3, n_memory=2, hidden=8),
    "LearnedPrimal": lambda: LearnedPrimal(VOLUME, PARALLEL, n_iter=2, n_primal=3, hidden=8),
    "LearnedPrimalDual": lambda: LearnedPrimalDual(VOLUME, PARALLEL, n_iter=2, n_primal=3, n_dual=3, hidden=8),
    "LearnedPrimalDual-fbp": lambda: LearnedPrimalDual(VOLUME, PARALLEL, n_iter=2, n_primal=3, n_dual=3, hidden=8,
                                                       initial="fbp"),
    "DerivedRebinning": lambda: DerivedRebinning(VOLUME, PARALLEL_30, FULL_FAN.to_dict()),
}


def _geometry(model):
    return model.geometry


def _output_shape(model) -> tuple[int, ...]:
    """An image, or for DerivedRebinning a fan sinogram."""
    return tuple(model.fan_geometry.shape) if isinstance(model, DerivedRebinning) else VOLUME.shape


def _data(model, lead=(2,), dtype=torch.float32, seed=0):
    """Exact sinograms of random ellipse phantoms for the model's geometry, and the targets: the
    phantoms (or, for DerivedRebinning, their exact fan sinograms)."""
    n = math.prod(lead)
    kw = dict(volume=VOLUME, generator=seed, n_ellipses=6)
    if isinstance(model, DerivedRebinning):
        x = phantoms.random_ellipse_projections(n, model.fan_geometry, **kw)
    else:
        x = phantoms.random_ellipse_images(n, VOLUME, generator=seed, dtype=torch.float64, n_ellipses=6)
    y = phantoms.random_ellipse_projections(n, _geometry(model), **kw)
    return x.reshape(lead + _output_shape(model)).to(dtype), y.reshape(lead + _geometry(model).shape).to(dtype)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These problems are tiny: one thread avoids the threads' start-up and spin costs, which dominate
    here (measured on 2 busy cores: 20 ms a training step with one thread, 0.3-0.75 s with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=list(FACTORIES))
def model(request):
    torch.manual_seed(0)
    return FACTORIES[request.param]()


def test_shapes_with_batch_and_channel_dims(model):
    _, y = _data(model, lead=(2, 3))
    out = model(y)
    assert out.shape == (2, 3) + _output_shape(model) and out.dtype == torch.float32
    torch.testing.assert_close(model(y[1, 2]), out[1, 2], rtol=1e-5, atol=1e-6)
    assert count_parameters(model) > 0


def test_gradients_reach_every_learnable_parameter_and_no_known_operator(model):
    """After one optimiser step: a last layer that starts at zero (LearnedGradient, so that it starts as FBP)
    blocks the gradient of the layers before it until it has moved."""
    _, y = _data(model)
    model(y).square().sum().backward()
    torch.optim.Adam(model.parameters(), lr=1e-3).step()
    model.zero_grad()
    model(y).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    for module in model.modules():
        if isinstance(module, (ko.RayTransform, ko.linear.AdjointOperator, ko.FiniteDifferenceGradient)):
            assert not any(p.requires_grad for p in module.parameters()), type(module).__name__


def test_float64_gradcheck_with_respect_to_the_data(model):
    model = model.double()
    # Random data with no exact zeros: a sinogram that is 0 outside the object's shadow puts ReLU/PReLU
    # pre-activations exactly at their kink (0), where finite differences see half the slope.
    gen = torch.Generator().manual_seed(1)
    y = (torch.rand((1,) + _geometry(model).shape, dtype=torch.float64, generator=gen) + 0.5).requires_grad_(True)
    weights = torch.randn((1,) + _output_shape(model), dtype=torch.float64, generator=gen)
    # fast_mode: the Jacobian is checked along random directions (one forward difference pair each).
    assert torch.autograd.gradcheck(lambda t: (model(t) * weights).sum(), (y,), eps=1e-6, atol=1e-5, rtol=1e-4,
                                    fast_mode=True)


def test_round_trips_state_dict_deepcopy_and_pickle(model):
    _, y = _data(model)
    expected = model(y)
    fresh = FACTORIES_BY_TYPE[type(model)](model)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(y), expected)
    assert torch.equal(copy.deepcopy(model)(y), expected)
    assert torch.equal(pickle.loads(pickle.dumps(model))(y), expected)


def test_bf16_autocast_forward_and_backward(model):
    _, y = _data(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(y)
    out.float().square().mean().backward()
    assert torch.isfinite(out.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_compiled_model_matches_eager(model):
    _, y = _data(model)
    expected = model(y)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(y), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_overfits_one_small_batch(name):
    torch.manual_seed(0)
    model = FACTORIES[name]()
    x, y = _data(model, lead=(OVERFIT_BATCH.get(name, 2),))
    if isinstance(model, DerivedRebinning):
        # A fit its output space can hold: the sinograms of the pixel images (exact line integrals of
        # ellipses are not fan projections of any 16 x 16 image; measured: 5x lower loss at best there).
        images = phantoms.random_ellipse_images(2, VOLUME, generator=0, n_ellipses=6)
        with torch.no_grad():
            x, y = ko.RayTransform(VOLUME, model.fan_geometry)(images), ko.RayTransform(VOLUME, model.geometry)(images)
    optimiser = torch.optim.Adam(model.parameters(), lr=OVERFIT_LR.get(name, 1e-3))
    losses = []
    for _ in range(OVERFIT_STEPS):
        optimiser.zero_grad()
        loss = torch.nn.functional.mse_loss(model(y), x)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] <= losses[0] / 10, f"{name}: loss {losses[0]:.3g} -> {losses[-1]:.3g}"


OVERFIT_STEPS = 300
# LearnedFBP has one weight per view and column (12 x 31 here, plus filter and cosine weights), a linear
# model: on one image it reduces the loss 10-16x in 300 steps at lr 0.05 (seeds 0-3; 12x for seed 0),
# on two images only 3-6x.
OVERFIT_LR = {"LearnedFBP": 5e-2, "DerivedRebinning": 1e-2}
OVERFIT_BATCH = {"LearnedFBP": 1}


# Fresh instances of the same configuration, for the state_dict round trip.
FACTORIES_BY_TYPE = {
    LearnedFBP: lambda m: FACTORIES["LearnedFBP"](),
    LearnedGradient: lambda m: FACTORIES["LearnedGradient"](),
    LearnedPrimal: lambda m: FACTORIES["LearnedPrimal"](),
    LearnedPrimalDual: lambda m: FACTORIES["LearnedPrimalDual-fbp" if m.initial == "fbp" else "LearnedPrimalDual"](),
    DerivedRebinning: lambda m: FACTORIES["DerivedRebinning"](),
}


# --- model-specific starts ---------------------------------------------------------------------------


LEARNED_FBP_GEOMETRIES = {
    "parallel-pi": ko.ParallelBeam2D(ko.uniform_angles(40), 23, 1.0),
    "parallel-limited": ko.ParallelBeam2D(ko.uniform_angles(30, math.radians(120)), 23, 1.0),
    "fan-flat-short": ko.FanBeam2D(ko.uniform_angles(40, math.pi + 0.8), 60.0, 40.0, 31, 1.0, det_offset=0.4),
    "fan-curved-full": ko.FanBeam2D(ko.uniform_angles(40, 2 * math.pi), 60.0, 40.0, 31, 1.0, detector="curved"),
    "fan-flat-limited": ko.FanBeam2D(ko.uniform_angles(30, math.radians(120)), 60.0, 40.0, 31, 1.0),
}


@pytest.mark.parametrize("name", list(LEARNED_FBP_GEOMETRIES))
def test_learned_fbp_starts_as_fbp(name):
    geo = LEARNED_FBP_GEOMETRIES[name]
    y = phantoms.shepp_logan_projections(geo, volume=VOLUME)
    learned = LearnedFBP(VOLUME, geo, filter="hann", cutoff=0.9, learn_filter=True,
                         learn_cosine=isinstance(geo, ko.FanBeam2D)).double()
    expected = recon.FBP(VOLUME, geo, filter="hann", cutoff=0.9)(y)
    assert float(torch.linalg.vector_norm(learned(y) - expected) / torch.linalg.vector_norm(expected)) <= 1e-6
    # One weight per view and detector column, initialised to Parker's weights for the scan's range.
    weight = learned.redundancy_weighting.weight.detach()
    assert weight.shape == geo.shape
    torch.testing.assert_close(weight, ko.parker_weights(geo, reduced_scan=True).expand(geo.shape))


def test_learned_fbp_starts_as_fdk_for_a_cone_beam_short_scan():
    vol = ko.Volume((8, 10, 10), 1.0)
    cone = ko.ConeBeam3D(ko.uniform_angles(24, math.pi + 0.9), 60.0, 40.0, (9, 21), 1.0)
    y = torch.rand((2,) + cone.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    learned = LearnedFBP(vol, cone, learn_filter=True, learn_cosine=True).double()
    expected = recon.FDK(vol, cone)(y)
    assert float(torch.linalg.vector_norm(learned(y) - expected) / torch.linalg.vector_norm(expected)) <= 1e-6
    assert learned.redundancy_weighting.weight.shape == (24, 1, 21)
    learned(y).sum().backward()
    assert learned.redundancy_weighting.weight.grad.abs().sum() > 0


def test_learned_fbp_keeps_the_back_projector_frozen():
    learned = LearnedFBP(VOLUME, FAN)
    names = {name for name, _ in learned.named_parameters()}
    assert names == {"redundancy_weighting.weight"}
    assert count_parameters(learned) == FAN.n_views * FAN.det_count


def test_unrolled_models_have_the_papers_parameter_counts():
    """Adler and Oektem's sizes: 128 x 128 images, 30 views of 183 bins; the counts follow from their
    reference code (3x3 convolutions with biases, PReLU per channel in the primal-dual networks)."""
    vol = ko.Volume((128, 128), 1.0)
    geo = ko.ParallelBeam2D(ko.uniform_angles(30), 183, 1.0)
    assert count_parameters(LearnedGradient(vol, geo)) == 13_318  # "about 1.3e4"
    assert count_parameters(LearnedPrimalDual(vol, geo)) == 253_220  # "about 2.4e5" (10 x 25,322)
    assert count_parameters(LearnedPrimal(vol, geo)) == 125_170


def test_unrolled_models_normalise_the_operator_and_reconstruct_in_physical_units():
    model = LearnedPrimalDual(VOLUME, PARALLEL, n_iter=1, hidden=4)
    A = ko.RayTransform(VOLUME, PARALLEL)
    assert abs(model.operator_norm - A.norm()) <= 1e-9 * A.norm()
    assert abs(model.operator.norm() - 1.0) <= 1e-6
    # The FBP start is the physical FBP of the (unnormalised) data.
    start = LearnedGradient(VOLUME, PARALLEL, n_iter=1, hidden=4)
    _, y = _data(start)
    torch.testing.assert_close(start.fbp(y), recon.FBP(VOLUME, PARALLEL)(y))


@pytest.mark.parametrize("kwargs, match", [
    ({"n_iter": 0}, "n_iter"), ({"n_primal": 1}, "n_primal"), ({"initial": "random"}, "initial"),
    ({"operator": ko.RayTransform(ko.Volume((8, 8)), PARALLEL)}, "operator"),
])
def test_unrolled_models_reject_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        LearnedPrimalDual(VOLUME, PARALLEL, **kwargs)


def test_learned_fbp_rejects_bad_arguments():
    with pytest.raises(TypeError, match="learn_filter"):
        LearnedFBP(VOLUME, FAN, learn_filter="yes")
    with pytest.raises(ValueError, match="learn_cosine"):
        LearnedFBP(VOLUME, PARALLEL, learn_cosine=True)
    with pytest.raises(TypeError, match="learnable"):
        LearnedFBP(VOLUME, FAN, learnable=True)
    with pytest.raises(ValueError, match="y must have shape"):
        LearnedFBP(VOLUME, FAN)(torch.zeros(2, 5, 5))


# --- CUDA (runs when a GPU is present; benchmarks/gpu_check.sh) ----------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize("name", list(FACTORIES) + ["VariationalNetwork", "UNetPostProcessing"])
def test_cuda_matches_the_cpu(name):
    """Every model on CUDA gives the CPU's output (float64, 1e-10) and trains a step there."""
    from recon.learned import UNetPostProcessing, VariationalNetwork

    torch.manual_seed(0)
    extra = {"VariationalNetwork": lambda: VariationalNetwork(VOLUME, PARALLEL, n_stages=2, n_filters=4),
             "UNetPostProcessing": lambda: UNetPostProcessing(VOLUME, PARALLEL, features=4, depth=2)}
    model = (FACTORIES.get(name) or extra[name])().double()
    if name == "UNetPostProcessing":  # its last layer starts at zero: make the U-Net part count
        torch.nn.init.normal_(model.unet.last.weight, std=0.1)
    x, y = _data(model, dtype=torch.float64)
    expected = model(y)
    gpu = copy.deepcopy(model).cuda()
    out = gpu(y.cuda())
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-10)
    torch.nn.functional.mse_loss(out, x.cuda()).backward()
    assert all(p.grad is not None and p.grad.is_cuda for p in gpu.parameters() if p.requires_grad)


def test_a_geometry_that_misses_the_volume_is_a_clear_error():
    """A detector that no ray through the volume reaches makes A = 0: it cannot be normalised by its norm."""
    from recon.learned import VariationalNetwork

    aside = ko.ParallelBeam2D(ko.uniform_angles(6), 5, 1.0, det_offset=100.0)
    for cls in (LearnedPrimalDual, LearnedGradient, VariationalNetwork):
        with pytest.raises(ValueError, match="operator is zero"):
            cls(VOLUME, aside)


def test_learned_gradient_starts_as_fbp():
    model = LearnedGradient(VOLUME, PARALLEL, n_iter=3, n_memory=2, hidden=8)
    _, y = _data(model)
    torch.testing.assert_close(model(y), recon.FBP(VOLUME, PARALLEL)(y))
    reference = LearnedGradient(VOLUME, PARALLEL, n_iter=3, n_memory=2, hidden=8, zero_init=False)
    assert not torch.allclose(reference(y), recon.FBP(VOLUME, PARALLEL)(y))
