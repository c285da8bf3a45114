"""Iterative reconstruction (recon.iterative) and the operator norm (known_ops.linalg).

Small problems (16x16 and 32x32 images, 24-32 views), so the whole file runs in seconds:
objectives decrease where theory says so, consistent data of a well-posed problem are
reconstructed, constraints hold, batches equal per-item runs, float32 works, bad input raises.
"""
from __future__ import annotations

import math
import sys

import pytest
import torch

import known_ops as ko
import phantoms
import recon
from known_ops.linalg import operator_norm
from known_ops.linear import forward_differences as _gradient
from known_ops.linear import forward_differences_adjoint as _gradient_adjoint

# Under-determined: 32x32 pixels, 24 views x 45 bins (A has a null space).
VOL32 = ko.Volume((32, 32))
A32 = ko.RayTransform(VOL32, ko.ParallelBeam2D(ko.uniform_angles(24), 45))
X32 = phantoms.shepp_logan(VOL32).double()
Y32 = A32(X32)
NOISY32 = Y32 + 0.02 * Y32.abs().mean() * torch.randn(Y32.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

# Well posed: 16x16 pixels, 32 views x 45 bins of 0.5 mm (condition number of A about 11).
VOL16 = ko.Volume((16, 16))
A16 = ko.RayTransform(VOL16, ko.ParallelBeam2D(ko.uniform_angles(32), 45, 0.5))
X16 = phantoms.shepp_logan(VOL16).double()
Y16 = A16(X16)
NOISY16 = Y16 + 0.02 * Y16.abs().mean() * torch.randn(Y16.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

SOLVERS = {
    "landweber": lambda A, y, **kw: recon.landweber(A, y, 20, **kw),
    "sirt": lambda A, y, **kw: recon.sirt(A, y, 20, **kw),
    "cgls": lambda A, y, **kw: recon.cgls(A, y, 10, **kw),
    "tv_pdhg": lambda A, y, **kw: recon.tv_pdhg(A, y, 0.05, 30, **kw),
    "tv_pdhg_precond": lambda A, y, **kw: recon.tv_pdhg(A, y, 0.05, 30, precondition=True, **kw),
}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def explicit_matrix(A) -> torch.Tensor:
    """The matrix of A, (range size, domain size), by applying A to every unit vector at once."""
    n = math.prod(A.domain_shape)
    unit = torch.eye(n, dtype=torch.float64).reshape((n,) + tuple(A.domain_shape))
    return A(unit).reshape(n, -1).T


# --- operator norm -------------------------------------------------------------------------------

SMALL_OPERATORS = {
    "parallel": lambda: ko.RayTransform(ko.Volume((6, 7), spacing=(1.0, 1.3)), ko.ParallelBeam2D(ko.uniform_angles(5), 9, 1.2)),
    "fan": lambda: ko.RayTransform(ko.Volume((7, 5), offset=(0.5, -1.0)), ko.FanBeam2D(ko.uniform_angles(6, 2 * math.pi), 20.0, 10.0, 11, 1.5)),
    "cone": lambda: ko.RayTransform(ko.Volume((3, 4, 5)), ko.ConeBeam3D(ko.uniform_angles(4, 2 * math.pi), 20.0, 10.0, (4, 7), 1.4)),
    "parallel3d": lambda: ko.RayTransform(ko.Volume((4, 3, 5), spacing=(0.8, 1.0, 1.2)), ko.ParallelBeam3D(ko.uniform_angles(3), (5, 6))),
}


@pytest.mark.parametrize("name", list(SMALL_OPERATORS))
def test_operator_norm_matches_the_explicit_matrix(name):
    A = SMALL_OPERATORS[name]()
    exact = float(torch.linalg.matrix_norm(explicit_matrix(A), ord=2))
    estimate = operator_norm(A)
    assert isinstance(estimate, float)
    assert abs(estimate - exact) <= 1e-4 * exact
    assert estimate <= exact * (1 + 1e-12)  # power iteration approaches from below


def test_operator_norm_is_deterministic_and_seed_independent_to_tolerance():
    first, second = operator_norm(A32, seed=3), operator_norm(A32, seed=3)
    assert first == second
    assert abs(operator_norm(A32, seed=4) - first) <= 1e-6 * first
    assert abs(operator_norm(A32, dtype=torch.float32) - first) <= 1e-5 * first


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n_iter": 0}, ValueError, "n_iter"),
        ({"n_iter": 2.5}, TypeError, "n_iter"),
        ({"tol": -1.0}, ValueError, "tol"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"dtype": torch.int64}, TypeError, "dtype"),
    ],
)
def test_operator_norm_rejects_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        operator_norm(A32, **kwargs)


def test_operator_norm_rejects_a_non_operator():
    with pytest.raises(TypeError, match="A must be a linear operator"):
        operator_norm(torch.eye(3))


# --- monotonicity ----------------------------------------------------------------------------------


def _non_increasing(values: torch.Tensor, rtol: float = 1e-12) -> bool:
    return bool(torch.all(values[1:] <= values[:-1] * (1 + rtol) + 1e-13))


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("factor", [None, 1.9])
def test_landweber_residual_does_not_increase(nonneg, factor):
    step = None if factor is None else factor / operator_norm(A32) ** 2 / 1.01
    _, history = recon.landweber(A32, NOISY32, 60, step=step, nonneg=nonneg, return_history=True)
    residual = history["residual"]
    assert residual.shape == (61,)
    assert _non_increasing(residual)
    assert residual[-1] < 0.2 * residual[0]


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("relaxation", [1.0, 1.8])
def test_sirt_weighted_residual_does_not_increase(nonneg, relaxation):
    _, history = recon.sirt(A32, NOISY32, 60, nonneg=nonneg, relaxation=relaxation, return_history=True)
    assert _non_increasing(history["weighted_residual"])
    assert history["weighted_residual"][-1] < 0.2 * history["weighted_residual"][0]


def test_sirt_weights_match_the_row_and_column_sums():
    """One SIRT step from 0 equals C A.T R y with the sums computed explicitly from the matrix."""
    A = SMALL_OPERATORS["fan"]()
    M = explicit_matrix(A)
    y = torch.rand(A.range_shape, dtype=torch.float64)
    rows, cols = M.sum(1), M.sum(0)
    R = torch.where(rows > 0, 1 / rows.clamp(min=1e-300), torch.zeros_like(rows))
    C = torch.where(cols > 0, 1 / cols.clamp(min=1e-300), torch.zeros_like(cols))
    expected = C * (M.T @ (R * y.reshape(-1)))
    got = recon.sirt(A, y, 1)
    assert torch.allclose(got.reshape(-1), expected, rtol=1e-10, atol=1e-12)


def test_cgls_residual_does_not_increase():
    _, history = recon.cgls(A32, NOISY32, 40, return_history=True)
    assert _non_increasing(history["residual"])
    assert history["normal_residual"].shape == (41,)  # recorded, but not monotone in general
    # The recursive residual stays the true one.
    x = recon.cgls(A32, NOISY32, 40)
    assert abs(float(torch.linalg.vector_norm(NOISY32 - A32(x))) - float(history["residual"][-1])) < 1e-8 * float(history["residual"][0])


def test_cgls_matches_the_least_squares_solution_on_a_small_problem():
    A = SMALL_OPERATORS["parallel"]()
    M = explicit_matrix(A)
    y = torch.rand(A.range_shape, dtype=torch.float64)
    expected = torch.linalg.lstsq(M, y.reshape(-1, 1)).solution.reshape(A.domain_shape)
    got = recon.cgls(A, y, 200)
    assert rel(got, expected) < 1e-8


@pytest.mark.parametrize("nonneg", [False, True])
def test_tv_pdhg_converges(nonneg):
    """Both step choices reach the best objective found; the restricted gap is >= 0 and shrinks."""
    runs = [recon.tv_pdhg(A16, NOISY16, 0.1, 800, nonneg=nonneg, precondition=pre, return_history=True)[1] for pre in (True, False)]
    best = min(float(h["objective"].min()) for h in runs)
    for h in runs:
        objective, gap = h["objective"], h["gap"]
        assert float(objective[-1]) - best <= 1e-3 * best
        assert float(objective[-1]) <= 0.01 * float(objective[0])
        assert bool(torch.all(gap >= -1e-9 * objective[0]))
        assert float(gap[-1]) < 1e-3 * float(gap[10])
    assert float(runs[0]["objective"][-1]) - best <= 1e-4 * best  # preconditioned: faster


def test_tv_pdhg_with_zero_weight_is_least_squares():
    x = recon.tv_pdhg(A16, Y16, 0.0, 400, precondition=True)
    assert rel(x, X16) < 1e-3


# --- accuracy on consistent data ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, run, tolerance",
    [
        ("landweber", lambda y: recon.landweber(A16, y, 1000), 1e-4),
        ("sirt", lambda y: recon.sirt(A16, y, 600), 1e-3),
        ("sirt_nonneg", lambda y: recon.sirt(A16, y, 600, nonneg=True), 1e-3),
        ("cgls", lambda y: recon.cgls(A16, y, 50), 1e-8),
        ("tv_pdhg", lambda y: recon.tv_pdhg(A16, y, 1e-4, 500, precondition=True), 1e-4),
    ],
)
def test_consistent_data_of_a_well_posed_problem_is_reconstructed(name, run, tolerance):
    assert rel(run(Y16), X16) < tolerance


def test_tv_beats_least_squares_on_noisy_under_determined_data():
    x_tv = recon.tv_pdhg(A32, NOISY32, 0.1, 300, precondition=True, nonneg=True)
    x_cg = recon.cgls(A32, NOISY32, 20)  # about the best stopping index of CGLS here
    assert rel(x_tv, X32) < 0.1
    assert rel(x_tv, X32) < 0.5 * rel(x_cg, X32)


# --- constraints, batches, dtypes, warm starts, 3D --------------------------------------------------


@pytest.mark.parametrize("name", ["landweber", "sirt", "tv_pdhg", "tv_pdhg_precond"])
def test_nonneg_is_respected(name):
    free = SOLVERS[name](A32, NOISY32)
    assert float(free.min()) < 0  # the constraint is active on these data
    x = SOLVERS[name](A32, NOISY32, nonneg=True)
    assert float(x.min()) >= 0


@pytest.mark.parametrize("name", list(SOLVERS))
def test_batches_equal_per_item_runs(name):
    """Up to rounding: the batched projector is not bitwise equal to the one-image one, and CGLS
    amplifies such differences along its trajectory (5e-9 after 10 iterations here)."""
    run = SOLVERS[name]
    items = [NOISY32, 0.5 * Y32.flip(-1), torch.zeros_like(Y32), Y32]
    batch = torch.stack(items).reshape(2, 2, *Y32.shape)
    x = run(A32, batch)
    assert x.shape == (2, 2) + VOL32.shape
    assert torch.isfinite(x).all()
    for k, item in enumerate(items):
        single = run(A32, item)
        assert float(torch.linalg.vector_norm(x.reshape(4, *VOL32.shape)[k] - single)) <= 1e-7 * float(torch.linalg.vector_norm(single)), k


@pytest.mark.parametrize("name", list(SOLVERS))
def test_float32_works_and_agrees_with_float64(name):
    x64 = SOLVERS[name](A32, NOISY32)
    x32 = SOLVERS[name](A32, NOISY32.float())
    assert x32.dtype == torch.float32
    if name == "cgls":
        # Rounding changes CG's trajectory (loss of conjugacy): 1 % apart after 10 iterations on
        # this problem, as far apart as either is from the solution; both converge to it.
        assert rel(x32.double(), x64) < 0.05
        assert rel(recon.cgls(A16, Y16.float(), 50).double(), X16) < 1e-5
    else:
        assert rel(x32.double(), x64) < 1e-4


@pytest.mark.parametrize(
    "name, run",
    [
        ("landweber", lambda y, n, x0: recon.landweber(A32, y, n, x0=x0, step=1e-3)),
        ("sirt", lambda y, n, x0: recon.sirt(A32, y, n, x0=x0)),
    ],
)
def test_warm_start_continues_the_iteration(name, run):
    straight = run(NOISY32, 10, None)
    resumed = run(NOISY32, 6, run(NOISY32, 4, None))
    assert torch.allclose(resumed, straight, rtol=1e-12, atol=1e-14)


def test_x0_broadcasts_over_the_batch():
    batch = torch.stack([NOISY32, Y32])
    x0 = torch.full(VOL32.shape, 0.1, dtype=torch.float64)
    x = recon.sirt(A32, batch, 5, x0=x0)
    assert torch.allclose(x[1], recon.sirt(A32, Y32, 5, x0=x0), rtol=1e-12)


def test_three_dimensional_tv_and_cgls():
    vol = ko.Volume((6, 8, 8), spacing=(1.5, 1.0, 1.0))
    A = ko.RayTransform(vol, ko.ConeBeam3D(ko.uniform_angles(12, 2 * math.pi), 40.0, 20.0, (10, 16), 1.2))
    x_true = phantoms.shepp_logan_3d(vol).double()
    y = A(x_true)
    x, hist = recon.tv_pdhg(A, torch.stack([y, y]), 1e-3, 100, precondition=True, nonneg=True, return_history=True)
    assert x.shape == (2,) + vol.shape and float(x.min()) >= 0
    assert float(hist["objective"][-1, 0]) < 1e-2 * float(hist["objective"][0, 0])
    _, cg = recon.cgls(A, y, 15, return_history=True)
    assert _non_increasing(cg["residual"])


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 1.3), (1.2, 0.5, 2.0)])
def test_gradient_adjoint_is_exact(spacing):
    shape = (5, 6, 7)[-len(spacing):]
    x = torch.randn((3,) + shape, dtype=torch.float64)
    g = torch.randn((3, len(spacing)) + shape, dtype=torch.float64)
    lhs = torch.sum(_gradient(x, spacing) * g)
    rhs = torch.sum(x * _gradient_adjoint(g, spacing))
    assert abs(float(lhs - rhs)) < 1e-12 * float(torch.linalg.vector_norm(g) * torch.linalg.vector_norm(x))
    # The bound used for the step sizes: ||grad||^2 < 4 sum 1/h^2.
    n = math.prod(shape)
    unit = torch.eye(n, dtype=torch.float64).reshape((n,) + shape)
    G = _gradient(unit, spacing).reshape(n, -1)
    assert float(torch.linalg.matrix_norm(G, ord=2)) ** 2 < 4 * sum(1 / h**2 for h in spacing)


def test_total_variation_of_a_step():
    x = torch.zeros(2, 4, 6, dtype=torch.float64)
    x[..., 3:] = 2.0
    x[1] *= 0.5
    assert torch.allclose(recon.total_variation(x, spacing=(1.0, 0.5)), torch.tensor([4 * 2 / 0.5, 4 * 1 / 0.5], dtype=torch.float64))


def test_unrolled_iterations_are_differentiable():
    A = SMALL_OPERATORS["parallel"]()
    y = torch.rand(A.range_shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: recon.landweber(A, t, 3, step=0.01), (y,))
    assert torch.autograd.gradcheck(lambda t: recon.cgls(A, t, 3), (y,))


# --- callbacks, history, progress --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SOLVERS))
def test_callback_and_history(name):
    calls = []

    def callback(iteration, x, info):
        calls.append((iteration, tuple(x.shape), {k: v.clone() for k, v in info.items()}))

    batch = torch.stack([NOISY32, Y32])
    x, history = SOLVERS[name](A32, batch, callback=callback, return_history=True)
    n = len(calls)
    assert [c[0] for c in calls] == list(range(1, n + 1))
    assert all(c[1] == (2,) + VOL32.shape for c in calls)
    assert "residual" in history
    for key, values in history.items():
        assert values.shape == (n + 1, 2)
        assert torch.equal(values[-1], calls[-1][2][key])
    # The residual history is that of the returned iterate.
    assert torch.allclose(history["residual"][-1], torch.linalg.vector_norm(batch - A32(x), dim=(-2, -1)), rtol=1e-8)


def test_callback_returning_true_stops():
    x, history = recon.cgls(A32, Y32, 50, callback=lambda k, x, info: k == 3, return_history=True)
    assert history["residual"].shape == (4,)
    assert torch.equal(x, recon.cgls(A32, Y32, 3))


def test_progress_bar(capsys):
    pytest.importorskip("tqdm")
    recon.sirt(A32, Y32, 3, progress=True)
    assert "sirt" in capsys.readouterr().err


def test_progress_without_tqdm_raises_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    recon.sirt(A32, Y32, 2)  # no tqdm needed without progress
    with pytest.raises(ImportError, match="progress=True needs the tqdm package"):
        recon.sirt(A32, Y32, 2, progress=True)


# --- bad input ---------------------------------------------------------------------------------------

ALL = {
    "landweber": lambda **kw: recon.landweber(**{"A": A32, "y": Y32, "n_iter": 2, **kw}),
    "sirt": lambda **kw: recon.sirt(**{"A": A32, "y": Y32, "n_iter": 2, **kw}),
    "cgls": lambda **kw: recon.cgls(**{"A": A32, "y": Y32, "n_iter": 2, **kw}),
    "tv_pdhg": lambda **kw: recon.tv_pdhg(**{"A": A32, "y": Y32, "lam": 0.1, "n_iter": 2, **kw}),
}

COMMON_BAD = [
    ({"y": Y32[:, :-1]}, ValueError, r"y must have shape \(\.\.\., 24, 45\)"),
    ({"y": Y32.T}, ValueError, r"y must have shape"),
    ({"y": Y32.numpy()}, TypeError, "y must be a torch.Tensor"),
    ({"y": Y32.to(torch.int64)}, TypeError, "y must be float32 or float64"),
    ({"n_iter": 0}, ValueError, "n_iter must be a positive integer"),
    ({"n_iter": -3}, ValueError, "n_iter"),
    ({"n_iter": 2.0}, TypeError, "n_iter"),
    ({"n_iter": True}, TypeError, "n_iter"),
    ({"x0": torch.zeros(31, 32, dtype=torch.float64)}, ValueError, r"x0 must have shape \(\.\.\., 32, 32\)"),
    ({"x0": torch.zeros(32, 32, dtype=torch.float32)}, TypeError, "x0 must have y's dtype"),
    ({"x0": torch.zeros(3, 32, 32, dtype=torch.float64), "y": torch.stack([Y32, Y32])}, ValueError, "x0's leading dims"),
    ({"x0": [0.0]}, TypeError, "x0 must be a torch.Tensor"),
    ({"callback": 3}, TypeError, "callback must be callable"),
    ({"progress": "yes"}, TypeError, "progress"),
    ({"return_history": 1}, TypeError, "return_history"),
    ({"A": torch.eye(3)}, TypeError, "A must be a linear operator"),
    ({"y": torch.zeros(Y32.shape, dtype=torch.float64, device="meta")}, ValueError, r"y is on meta but the operator A is on cpu"),
]


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("kwargs, error, match", COMMON_BAD, ids=[f"bad{k}" for k in range(len(COMMON_BAD))])
def test_bad_common_input(name, kwargs, error, match):
    with pytest.raises(error, match=match):
        ALL[name](**kwargs)


@pytest.mark.parametrize(
    "name, kwargs, error, match",
    [
        ("landweber", {"step": 0.0}, ValueError, "step"),
        ("landweber", {"step": -1.0}, ValueError, "step"),
        ("landweber", {"step": "big"}, TypeError, "step"),
        ("landweber", {"nonneg": None}, TypeError, "nonneg"),
        ("sirt", {"relaxation": 2.0}, ValueError, "relaxation"),
        ("sirt", {"relaxation": 0.0}, ValueError, "relaxation"),
        ("sirt", {"relaxation": float("nan")}, ValueError, "relaxation"),
        ("tv_pdhg", {"lam": -0.1}, ValueError, "lam"),
        ("tv_pdhg", {"lam": float("inf")}, ValueError, "lam"),
        ("tv_pdhg", {"lam": "a"}, TypeError, "lam"),
        ("tv_pdhg", {"lam": torch.tensor(0.1)}, TypeError, "lam"),
        ("tv_pdhg", {"tau": 1.0, "sigma": 1.0}, ValueError, "tau and sigma must satisfy"),
        ("tv_pdhg", {"tau": 0.0}, ValueError, "tau"),
        ("tv_pdhg", {"sigma": -1.0}, ValueError, "sigma"),
        ("tv_pdhg", {"precondition": True, "tau": 0.01}, ValueError, "tau and sigma must be None"),
        ("tv_pdhg", {"precondition": 1}, TypeError, "precondition"),
    ],
)
def test_bad_solver_specific_input(name, kwargs, error, match):
    with pytest.raises(error, match=match):
        ALL[name](**kwargs)


# --- CUDA --------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or not ko._ops.WITH_CUDA, reason="needs CUDA and the CUDA kernels")
@pytest.mark.parametrize("name", list(SOLVERS))
def test_cuda_matches_cpu(name):
    A_gpu = ko.RayTransform(VOL32, A32.geometry).to("cuda")
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        cpu = SOLVERS[name](A32, NOISY32.to(dtype))
        gpu = SOLVERS[name](A_gpu, NOISY32.to(dtype).cuda())
        assert gpu.device.type == "cuda"
        assert rel(gpu.cpu().double(), cpu.double()) < tol
    assert abs(operator_norm(A_gpu) - operator_norm(A32)) < 1e-9 * operator_norm(A32)
