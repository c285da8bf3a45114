"""What training needs from the operator layer: copies, pickles and JSON descriptions of volumes,
geometries and modules; A.T owning A; the autocast policy; the LinearOperator algebra that solvers
and models accept; FBP made of injectable parts."""
from __future__ import annotations

import copy
import io
import json
import math
import pickle

import pytest
import torch

import known_ops as ko
import recon
from known_ops.linear import AdjointOperator

VOLUME = ko.Volume((12, 10), spacing=(0.8, 1.1), offset=(0.3, -0.2))
GEOMETRIES = {
    "parallel": ko.ParallelBeam2D(ko.uniform_angles(7), 17, 0.9, det_offset=0.2),
    "fan-curved": ko.FanBeam2D(ko.uniform_angles(9, 2 * math.pi), 60.0, 30.0, 21, 1.1, det_offset=0.4,
                               detector="curved"),
    "parallel-vectors": ko.ParallelBeam2D.from_vectors(ko.ParallelBeam2D(ko.uniform_angles(5), 9).to_vectors(), 9),
    "parallel3d": ko.ParallelBeam3D(ko.uniform_angles(4), (3, 5), (1.0, 0.7), det_offset=(0.1, -0.2)),
    "cone-helical": ko.ConeBeam3D(ko.uniform_angles(6, 2 * math.pi), 80.0, 40.0, (4, 7), 1.2, pitch=5.0),
    "cone-vectors": ko.ConeBeam3D.from_vectors(ko.ConeBeam3D(ko.uniform_angles(3), 80.0, 40.0, (4, 7)).to_vectors(),
                                               (4, 7), detector="curved"),
}


# --- volumes and geometries: copy, pickle, JSON --------------------------------------------------------


@pytest.mark.parametrize("name", ["volume"] + list(GEOMETRIES))
def test_copies_pickles_and_json_descriptions_are_exact(name):
    obj = VOLUME if name == "volume" else GEOMETRIES[name]
    assert copy.copy(obj) is obj and copy.deepcopy(obj) is obj  # immutable: a copy is the object
    restored = pickle.loads(pickle.dumps(obj))
    assert restored == obj and repr(restored) == repr(obj)
    description = json.loads(json.dumps(obj.to_dict()))  # JSON-serialisable, floats round-trip exactly
    rebuilt = ko.geometry_from_dict(description)
    assert rebuilt == obj and type(rebuilt) is type(obj) and repr(rebuilt) == repr(obj)
    if name != "volume":
        assert (rebuilt.to_vectors() == obj.to_vectors()).all()
        with pytest.raises(ValueError):
            restored._vectors[0, 0] = 1.0  # the unpickled arrays are read-only again
    with pytest.raises(AttributeError, match="immutable"):
        restored.shape = (1, 1)


def test_circular_short_form_builds_the_same_geometry():
    short = {"type": "FanBeam2D", "n_views": 9, "source_distance": 60.0, "detector_distance": 30.0,
             "det_count": 21, "det_spacing": 1.1, "det_offset": 0.4, "detector": "curved"}
    assert ko.geometry_from_dict(short) == GEOMETRIES["fan-curved"]
    with pytest.raises(ValueError, match="missing key.*det_count"):
        ko.geometry_from_dict({"type": "ParallelBeam2D", "n_views": 3})
    with pytest.raises(ValueError, match="unknown type"):
        ko.geometry_from_dict({"type": "Helix"})
    with pytest.raises(TypeError, match="dict"):
        ko.geometry_from_dict("ParallelBeam2D")


def test_modules_holding_operators_copy_pickle_and_save_whole():
    geo = GEOMETRIES["fan-curved"]
    model = torch.nn.Sequential(recon.FBP(VOLUME, geo, learnable=True))
    y = torch.rand((2,) + geo.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = model.double()
    expected = model(y)
    assert torch.equal(copy.deepcopy(model)(y), expected)
    assert torch.equal(pickle.loads(pickle.dumps(model))(y), expected)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=False)(y), expected)
    # The exponential moving average of torch.optim.swa_utils deep-copies the model.
    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9))
    ema.update_parameters(model)
    assert torch.equal(ema(y), expected)


def test_ray_transform_description_round_trips():
    A = ko.RayTransform(VOLUME, GEOMETRIES["parallel"], model="voxel", weighting="fdk")
    B = ko.RayTransform.from_dict(json.loads(json.dumps(A.to_dict())))
    x = torch.rand(VOLUME.shape, dtype=torch.float64)
    assert torch.equal(A(x), B(x)) and (B.model, B.weighting) == ("voxel", "fdk")
    with pytest.raises(ValueError, match="RayTransform"):
        ko.RayTransform.from_dict({"type": "Volume"})


def test_operator_settings_are_read_only():
    A = ko.RayTransform(VOLUME, GEOMETRIES["parallel"])
    for name, value in (("volume", ko.Volume((3, 3))), ("geometry", GEOMETRIES["fan-curved"]), ("model", "voxel"),
                        ("weighting", "fdk")):
        with pytest.raises(AttributeError, match=f"RayTransform.{name} is read-only.*build a new RayTransform"):
            setattr(A, name, value)


# --- A.T owns A ------------------------------------------------------------------------------------------


def test_the_adjoint_owns_the_operator_and_moves_its_tables():
    A = ko.RayTransform(VOLUME, GEOMETRIES["parallel"])
    assert isinstance(A.T, AdjointOperator) and A.T.T is A and A.T is A.T
    holder = torch.nn.Module()
    holder.back = A.T  # a model that stores only A.T
    assert dict(holder.named_modules())["back.op"] is A
    assert "back" not in dict(A.named_modules())  # A does not own A.T: no cycle of submodules
    holder.to("meta")
    assert A._rays.device.type == "meta" and A._views.device.type == "meta"


# --- autocast ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["parallel", "fan-curved", "parallel3d", "cone-helical"])
def test_half_precision_runs_in_float32_inside_autocast_only(name):
    geo = GEOMETRIES[name]
    volume = ko.Volume((3, 6, 6)) if geo.ndim == 3 else VOLUME
    A = ko.RayTransform(volume, geo)
    x = torch.rand((2,) + volume.shape)
    with pytest.raises(TypeError, match="bfloat16.*torch.autocast"):
        A(x.bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = A(x.bfloat16())
        back = A.T(y.bfloat16())
    assert y.dtype == back.dtype == torch.float32
    torch.testing.assert_close(y, A(x.bfloat16().float()))
    # A CNN in bf16 feeding the operator: forward and backward under autocast.
    conv = torch.nn.Conv2d(1, 1, 3, padding=1) if geo.ndim == 2 else torch.nn.Conv3d(1, 1, 3, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = A(conv(x.unsqueeze(1)).squeeze(1))
    out.square().mean().backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


def test_raw_ops_and_layers_follow_the_autocast_policy():
    geo = GEOMETRIES["parallel"]
    A = ko.RayTransform(VOLUME, geo)
    x = torch.rand((1,) + VOLUME.shape)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        raw = torch.ops.known_ops.joseph2d_forward(x.bfloat16(), A._rays_f32, A._views_f32)
        filtered = ko.RampFilter(geo.det_count)(torch.rand(geo.shape).bfloat16())
        weighted = ko.ProjectionWeight(init=torch.ones(geo.shape))(torch.rand(geo.shape).bfloat16())
    assert raw.dtype == filtered.dtype == weighted.dtype == torch.float32
    torch.testing.assert_close(raw, A(x.bfloat16().float()))


# --- the LinearOperator algebra ---------------------------------------------------------------------------


def test_algebra_composition_sums_and_scalars_have_exact_adjoints():
    A = ko.RayTransform(VOLUME, GEOMETRIES["parallel"])
    G = ko.FiniteDifferenceGradient(VOLUME)
    M = ko.MatrixOperator(torch.randn(5, math.prod(A.range_shape), dtype=torch.float64,
                                      generator=torch.Generator().manual_seed(3)), A.range_shape, (5,))
    for op in (A, G, M, M @ A, 2.5 * A, A * -1.0, A / 4.0, A + A, A - 0.5 * A, -G, M @ (A + A), A.T @ A,
               ko.IdentityOperator(VOLUME.shape)):
        assert op.adjointness_test() <= 1e-12, op
    x = torch.rand(VOLUME.shape, dtype=torch.float64)
    torch.testing.assert_close((M @ A)(x), M(A(x)))
    torch.testing.assert_close((A / 4.0).T(A(x)), A.T(A(x)) / 4.0)
    assert (M @ A).domain_shape == VOLUME.shape and (M @ A).range_shape == (5,)
    assert abs((A / A.norm()).norm() - 1.0) <= 1e-6
    assert abs(ko.operator_norm(A.T @ A) - A.norm() ** 2) <= 1e-5 * A.norm() ** 2
    assert G.norm() <= G.norm_bound()


def test_algebra_rejects_mismatched_shapes_and_non_operators():
    A = ko.RayTransform(VOLUME, GEOMETRIES["parallel"])
    with pytest.raises(ValueError, match="cannot compose"):
        A @ A
    with pytest.raises(ValueError, match="cannot add"):
        A + ko.FiniteDifferenceGradient(VOLUME)
    with pytest.raises(TypeError, match="A @ B"):
        A * A
    with pytest.raises(ZeroDivisionError):
        A / 0
    with pytest.raises(ValueError, match="finite"):
        A * math.inf
    with pytest.raises(TypeError, match="A must be a linear operator"):
        recon.cgls(torch.eye(3), torch.zeros(3))


def test_solvers_and_the_norm_accept_any_linear_operator():
    """A dense matrix and a composition: the solvers reach the least-squares solution of the matrix."""
    gen = torch.Generator().manual_seed(0)
    M = torch.randn(12, 6, dtype=torch.float64, generator=gen)
    op = ko.MatrixOperator(M, (2, 3), (12,))
    y = torch.randn(12, dtype=torch.float64, generator=gen)
    expected = torch.linalg.lstsq(M, y.unsqueeze(1)).solution.reshape(2, 3)
    torch.testing.assert_close(recon.cgls(op, y, n_iter=6), expected, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(recon.landweber(op, y, n_iter=3000), expected, rtol=1e-6, atol=1e-8)
    # A random matrix has close singular values, so the power method needs more iterations than a ray transform.
    assert abs(ko.operator_norm(op, n_iter=2000, tol=1e-14) - float(torch.linalg.matrix_norm(M, ord=2))) <= 1e-9
    scaled = 3.0 * op
    torch.testing.assert_close(recon.cgls(scaled, y, n_iter=6), expected / 3.0, rtol=1e-8, atol=1e-10)


def test_solvers_loop_over_the_shared_update_steps():
    """One iteration of each solver equals the step function of recon.steps that the networks call."""
    from recon import steps

    A = ko.RayTransform(VOLUME, GEOMETRIES["parallel"])
    x_true = torch.rand(VOLUME.shape, dtype=torch.float64)
    y = A(x_true)
    zero = torch.zeros(VOLUME.shape, dtype=torch.float64)
    torch.testing.assert_close(recon.landweber(A, y, n_iter=1, step=0.01),
                               steps.landweber_update(A, zero, y - A(zero), 0.01))
    R, C = steps.sirt_preconditioners(A, torch.float64, "cpu")
    torch.testing.assert_close(recon.sirt(A, y, n_iter=1), steps.sirt_update(A, zero, y, R, C))
    torch.testing.assert_close(steps.data_gradient(A, x_true, y), torch.zeros_like(x_true), atol=1e-12, rtol=0)


# --- FBP from injectable parts -------------------------------------------------------------------------


def test_fbp_parts_are_injectable():
    geo = ko.FanBeam2D(ko.uniform_angles(40, math.pi + 1.0), 60.0, 30.0, 31, 1.0)
    y = torch.rand((2,) + geo.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    default = recon.FBP(VOLUME, geo, filter="hann")
    assert {name for name, _ in default.named_children()} == {"redundancy_weighting", "cosine_weighting", "filter",
                                                              "backprojector"}
    back = ko.RayTransform(VOLUME, geo, model="voxel", weighting="fdk").T
    same = recon.FBP(VOLUME, geo, filter="hann", redundancy_weighting=ko.parker_weights(geo, reduced_scan=True),
                     backprojector=back, ramp_filter=ko.RampFilter(geo.det_count, 1.0, window="hann"))
    torch.testing.assert_close(same(y), default(y), rtol=1e-12, atol=1e-12)
    # Another back-projector (Joseph's transpose) and no redundancy weights: a different, valid chain.
    joseph = recon.FBP(VOLUME, geo, redundancy_weighting=None, backprojector=ko.RayTransform(VOLUME, geo).T, scale=0.5)
    assert joseph.redundancy_weighting is None and joseph.scale == 0.5 and torch.isfinite(joseph(y)).all()
    with pytest.raises(ValueError, match="backprojector must map"):
        recon.FBP(VOLUME, geo, backprojector=ko.RayTransform(ko.Volume((4, 4)), geo).T)
    with pytest.raises(ValueError, match="learnable: unknown part"):
        recon.FBP(VOLUME, geo, learnable=["weights"])
    with pytest.raises(ValueError, match="parallel beams have no cosine"):
        recon.FBP(VOLUME, GEOMETRIES["parallel"], learnable=["cosine"])
