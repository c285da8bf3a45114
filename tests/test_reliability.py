"""No silent wrong answers from the public API: metrics on constant images, solver step sizes and
degenerate operators, non-finite input, FBP/FDK shape messages, and data-only loading of files.

Small problems only: the whole file runs in a few seconds.
"""
from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import known_ops as ko
import recon
from recon.metrics import psnr, rmse, ssim

ROOT = Path(__file__).resolve().parents[1]


# --- metrics on constant references ----------------------------------------------------------------
#
# The default data range is max(ref) - min(ref), 0 for a constant reference. Identical images have
# PSNR inf and SSIM 1 for every positive data range, so those are the answers; an image that differs
# from a constant reference has no PSNR/SSIM without a data range (scikit-image gives -inf / NaN /
# rounding noise with data_range=0), so a ValueError asks for one.

DTYPES = [torch.float32, torch.float64]
SHAPES = {2: (12, 13), 3: (8, 9, 10)}


def _noisy(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("value", [0.0, 3.0, -0.7])
def test_identical_constant_images_have_psnr_inf_and_ssim_1(dtype, ndim, value):
    c = torch.full(SHAPES[ndim], value, dtype=dtype)
    p, s = psnr(c, c.clone(), ndim=ndim), ssim(c, c.clone(), ndim=ndim, win_size=5)
    assert p.dtype == s.dtype == dtype
    assert float(p) == math.inf
    assert float(s) == 1.0
    assert float(rmse(c, c, ndim=ndim)) == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("metric", [psnr, ssim])
def test_image_differing_from_a_constant_reference_asks_for_data_range(dtype, ndim, metric):
    c = torch.full(SHAPES[ndim], 2.0, dtype=dtype)
    x = c + 0.1 * _noisy(c.shape, dtype)
    kwargs = {"win_size": 5} if metric is ssim else {}
    with pytest.raises(ValueError, match=r"reference is constant .*pass data_range"):
        metric(x, c, ndim=ndim, **kwargs)
    # A constant x against a constant reference of another value: also no default range.
    with pytest.raises(ValueError, match="pass data_range"):
        metric(c + 1.0, c, ndim=ndim, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_reference_with_a_data_range_matches_scikit_image(dtype):
    skm = pytest.importorskip("skimage.metrics")
    c = torch.full((12, 13), 2.0, dtype=dtype)
    x = c + 0.1 * _noisy(c.shape, dtype)
    rtol = 1e-5 if dtype == torch.float32 else 1e-10
    expected = skm.peak_signal_noise_ratio(c.double().numpy(), x.double().numpy(), data_range=4.0)
    assert math.isclose(float(psnr(x, c, data_range=4.0)), expected, rel_tol=rtol)
    expected = skm.structural_similarity(c.double().numpy(), x.double().numpy(), data_range=4.0)
    assert math.isclose(float(ssim(x, c, data_range=4.0)), expected, rel_tol=1e-4 if dtype == torch.float32 else 1e-8)
    with np.errstate(divide="ignore"):
        assert skm.peak_signal_noise_ratio(c.double().numpy(), c.double().numpy(), data_range=4.0) == math.inf
    assert float(psnr(c, c, data_range=4.0)) == math.inf
    assert skm.structural_similarity(c.double().numpy(), c.double().numpy(), data_range=4.0) == 1.0
    assert float(ssim(c, c, data_range=4.0)) == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ndim", [2, 3])
def test_batches_where_only_some_references_are_constant(dtype, ndim):
    shape = SHAPES[ndim]
    varied = _noisy(shape, dtype, seed=1)
    x_varied = varied + 0.05 * _noisy(shape, dtype, seed=2)
    const = torch.full(shape, 1.5, dtype=dtype)
    ref = torch.stack([const, varied, torch.zeros(shape, dtype=dtype)])
    x = torch.stack([const, x_varied, torch.zeros(shape, dtype=dtype)])
    p = psnr(x, ref, ndim=ndim)
    s = ssim(x, ref, ndim=ndim, win_size=5)
    assert p[0] == math.inf and p[2] == math.inf and s[0] == 1.0 and s[2] == 1.0
    # The non-constant item is unchanged by its neighbours.
    assert torch.equal(p[1], psnr(x_varied, varied, ndim=ndim))
    assert torch.allclose(s[1], ssim(x_varied, varied, ndim=ndim, win_size=5), rtol=1e-6 if dtype == torch.float64 else 1e-4)
    assert torch.isfinite(p[1]) and 0 < float(s[1]) < 1
    # One constant reference that x differs from: the error names that batch item.
    bad = x.clone()
    bad[2] += 0.5
    for metric, kwargs in ((psnr, {}), (ssim, {"win_size": 5})):
        with pytest.raises(ValueError, match=r"batch item\(s\) 2 is constant"):
            metric(bad, ref, ndim=ndim, **kwargs)
    # With a data range, every item is defined.
    assert torch.isfinite(psnr(bad, ref, data_range=2.0, ndim=ndim)[2])
    # Multi-dim batches name the index tuple.
    zeros = torch.zeros((2, 2) + shape, dtype=dtype)
    with pytest.raises(ValueError, match=r"batch item\(s\) \(1, 0\) is constant"):
        psnr(_with(zeros, 1.0, (1, 0, 0)), zeros, ndim=ndim)


def test_ssim_gradient_is_finite_next_to_a_constant_item():
    shape = (10, 11)
    ref = torch.stack([torch.full(shape, 2.0, dtype=torch.float64), _noisy(shape, torch.float64, seed=3)])
    x = (ref + torch.stack([torch.zeros(shape, dtype=torch.float64), 0.05 * _noisy(shape, torch.float64, seed=4)]))
    x.requires_grad_(True)
    ssim(x, ref, win_size=3).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.all(x.grad[0] == 0)  # identical images: the maximum of SSIM
    assert torch.any(x.grad[1] != 0)


# --- solvers: step sizes --------------------------------------------------------------------------------

VOL = ko.Volume((16, 16))
A = ko.RayTransform(VOL, ko.ParallelBeam2D(ko.uniform_angles(12), 23))
X = torch.rand(VOL.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
Y = A(X)
NORM = ko.operator_norm(A)


def test_landweber_rejects_a_step_beyond_2_over_the_squared_norm():
    bound = 2.0 / NORM**2
    with pytest.raises(ValueError, match=rf"step must be below 2 / \|\|A\|\|\^2 = {bound:.6g}.*got 10"):
        recon.landweber(A, Y, 5, step=10.0)
    with pytest.raises(ValueError, match="step must be below"):
        recon.landweber(A, Y, 5, step=bound)
    with pytest.raises(ValueError, match="step must be below"):
        recon.landweber(A, Y, 5, step=1.001 * bound, nonneg=True)
    # Just below the bound converges (slowly along the top singular vector) and stays finite.
    x, history = recon.landweber(A, Y, 30, step=0.99 * bound, return_history=True)
    assert torch.isfinite(x).all()
    assert history["residual"][-1] < history["residual"][0]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: recon.landweber(A, Y, 2, step=math.inf), "step"),
        (lambda: recon.landweber(A, Y, 2, step=math.nan), "step"),
        (lambda: recon.sirt(A, Y, 2, relaxation=math.inf), "relaxation"),
        (lambda: recon.tv_pdhg(A, Y, math.nan, 2), "lam"),
        (lambda: recon.tv_pdhg(A, Y, 0.1, 2, tau=math.inf), "tau"),
        (lambda: recon.tv_pdhg(A, Y, 0.1, 2, sigma=math.nan), "sigma"),
        # Finite but so extreme that the other step is inf or 0:
        (lambda: recon.tv_pdhg(A, Y, 0.1, 2, tau=1e-320), r"tau = .* is out of range"),
        (lambda: recon.tv_pdhg(A, Y, 0.1, 2, sigma=1e308), r"sigma = .* is out of range"),
    ],
)
def test_non_finite_or_extreme_parameters_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- solvers: a zero operator (no ray crosses the volume) -------------------------------------------

MISSING = ko.RayTransform(ko.Volume((8, 8)), ko.ParallelBeam2D(ko.uniform_angles(6), 5, 1.0, det_offset=100.0))
ZERO_Y = torch.zeros(MISSING.range_shape, dtype=torch.float64)
RAND_Y = torch.rand(MISSING.range_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6))

ZERO_CALLS = {
    "landweber": lambda A, y: recon.landweber(A, y, 3),
    "landweber-step": lambda A, y: recon.landweber(A, y, 3, step=0.1),
    "sirt": lambda A, y: recon.sirt(A, y, 3),
    "cgls": lambda A, y: recon.cgls(A, y, 3),
    "tv_pdhg": lambda A, y: recon.tv_pdhg(A, y, 0.1, 3),
    "tv_pdhg-tau": lambda A, y: recon.tv_pdhg(A, y, 0.1, 3, tau=0.01),
    "tv_pdhg-precondition": lambda A, y: recon.tv_pdhg(A, y, 0.1, 3, precondition=True),
}


@pytest.mark.parametrize("name", list(ZERO_CALLS))
@pytest.mark.parametrize("y", [ZERO_Y, RAND_Y], ids=["zero-data", "data"])
def test_a_geometry_that_misses_the_volume_raises(name, y):
    assert ko.operator_norm(MISSING) == 0.0
    with pytest.raises(ValueError, match="the operator is zero: no ray of the geometry crosses the volume"):
        ZERO_CALLS[name](MISSING, y)


@pytest.mark.parametrize("name", list(ZERO_CALLS))
def test_a_zero_matrix_operator_raises(name):
    op = ko.MatrixOperator(torch.zeros(6, 4, dtype=torch.float64), (2, 2), (6,))
    with pytest.raises(ValueError, match="the operator is zero: it maps every input to 0"):
        ZERO_CALLS[name](op, torch.ones(6, dtype=torch.float64))


@pytest.mark.parametrize("name", ["sirt", "cgls", "tv_pdhg-precondition"])
def test_zero_data_on_a_nonzero_operator_gives_zeros(name):
    """The zero-operator test runs only when the row sums or A.T y vanish; zero data is fine."""
    x = ZERO_CALLS[name](A, torch.zeros(A.range_shape, dtype=torch.float64))
    assert torch.equal(x, torch.zeros_like(x))


# --- solvers: NaN or inf in y or x0 -------------------------------------------------------------------

SOLVERS = {
    "landweber": lambda **kw: recon.landweber(A, **{"y": Y, "n_iter": 2, **kw}),
    "sirt": lambda **kw: recon.sirt(A, **{"y": Y, "n_iter": 2, **kw}),
    "cgls": lambda **kw: recon.cgls(A, **{"y": Y, "n_iter": 2, **kw}),
    "tv_pdhg": lambda **kw: recon.tv_pdhg(A, **{"y": Y, "lam": 0.1, "n_iter": 2, **kw}),
    "tv_pdhg-precondition": lambda **kw: recon.tv_pdhg(A, **{"y": Y, "lam": 0.1, "n_iter": 2, "precondition": True, **kw}),
}


def _with(t: torch.Tensor, value: float, index) -> torch.Tensor:
    t = t.clone()
    t[index] = value
    return t


@pytest.mark.parametrize("name", list(SOLVERS))
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_y_or_x0_raises_naming_it(name, value):
    with pytest.raises(ValueError, match=r"^y contains NaN or inf \(1 of 276 values\)"):
        SOLVERS[name](y=_with(Y, value, (3, 4)))
    batch = torch.stack([Y, _with(Y, value, (0, 0))])  # one bad item in a batch
    with pytest.raises(ValueError, match=r"^y contains NaN or inf"):
        SOLVERS[name](y=batch)
    with pytest.raises(ValueError, match=r"^x0 contains NaN or inf \(1 of 256 values\)"):
        SOLVERS[name](x0=_with(torch.zeros(VOL.shape, dtype=torch.float64), value, (5, 5)))
    # float32 too
    with pytest.raises(ValueError, match=r"^y contains NaN or inf"):
        SOLVERS[name](y=_with(Y, value, (3, 4)).float())


@pytest.mark.parametrize("name", list(SOLVERS))
def test_solvers_return_finite_values_on_finite_input(name):
    assert torch.isfinite(SOLVERS[name]()).all()


# --- operator_norm on broken operators ----------------------------------------------------------------


def test_operator_norm_of_a_non_finite_operator_raises():
    op = ko.MatrixOperator(torch.tensor([[1.0, math.nan], [0.0, 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="A returned NaN or inf"):
        ko.operator_norm(op)
    with pytest.raises(ValueError, match="A returned NaN or inf"):
        recon.landweber(op, torch.ones(2, dtype=torch.float64), 2)


class _WrongAdjoint(ko.LinearOperator):
    domain_shape = (3,)
    range_shape = (3,)

    def forward(self, x):
        return x

    def adjoint(self, y):
        return torch.zeros_like(y)


def test_operator_norm_with_a_zero_adjoint_raises():
    with pytest.raises(ValueError, match="A.T is not the adjoint of A"):
        ko.operator_norm(_WrongAdjoint())


# --- FBP / FDK: the expected projection shape in messages --------------------------------------------

TWO_PI = 2 * math.pi
FBP_CASES = {
    "parallel": (recon.fbp, ko.Volume((16, 16)), ko.ParallelBeam2D(ko.uniform_angles(12), 23), r"\(\.\.\., 12, 23\)"),
    "parallel-2pi": (recon.fbp, ko.Volume((16, 16)), ko.ParallelBeam2D(ko.uniform_angles(12, TWO_PI), 23), r"\(\.\.\., 12, 23\)"),
    "fan": (recon.fbp, ko.Volume((16, 16)), ko.FanBeam2D(ko.uniform_angles(12, TWO_PI), 100.0, 50.0, 23), r"\(\.\.\., 12, 23\)"),
    "parallel3d": (recon.fbp, ko.Volume((4, 16, 16)), ko.ParallelBeam3D(ko.uniform_angles(12), (4, 23)), r"\(\.\.\., 12, 4, 23\)"),
    "cone": (recon.fdk, ko.Volume((4, 16, 16)), ko.ConeBeam3D(ko.uniform_angles(12, TWO_PI), 100.0, 50.0, (4, 23)), r"\(\.\.\., 12, 4, 23\)"),
}


@pytest.mark.parametrize("name", list(FBP_CASES))
def test_fbp_shape_messages_give_the_geometrys_projection_shape(name):
    fn, vol, geo, expected = FBP_CASES[name]
    good = torch.rand(geo.shape)
    assert fn(good, vol, geo).shape == vol.shape
    what = "n_views, det_count" if geo.ndim == 2 else "n_views, n_rows, n_cols"
    bad_shapes = [(10,) + tuple(geo.shape[1:]), tuple(geo.shape[:-1]) + (22,), tuple(geo.shape[1:]), (2,) + (10,) + tuple(geo.shape[1:])]
    for shape in bad_shapes:
        message = rf"y must have shape {expected} \(the geometry's projection shape \({what}\)\), got {re.escape(str(shape))}"
        with pytest.raises(ValueError, match=message):
            fn(torch.rand(shape), vol, geo)
        module = recon.FDK(vol, geo) if fn is recon.fdk else recon.FBP(vol, geo)
        with pytest.raises(ValueError, match=message):
            module(torch.rand(shape))
    with pytest.raises(TypeError, match="y must be a torch.Tensor, got list"):
        fn(good.tolist(), vol, geo)


# --- checkpoints are data, not code -----------------------------------------------------------------------

# Calls that execute code from a file unless told not to: (qualified name, keyword, value that makes it safe).
# torch.load needs weights_only=True literally (torch's default changed between versions; a default or
# a variable cannot be checked); np.load is safe unless allow_pickle is given as anything but False.
_GUARDED = {
    "torch.load": ("weights_only", True, True),
    "torch.serialization.load": ("weights_only", True, True),
    "numpy.load": ("allow_pickle", False, False),
}
_UNSAFE = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "cPickle.load",
    "cPickle.loads", "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads", "joblib.load",
    "marshal.load", "marshal.loads", "shelve.open", "pandas.read_pickle", "torch.jit.load",
    "torch.package.PackageImporter", "yaml.unsafe_load", "yaml.full_load", "numpy.lib.format.read_array",
}


def _qualified_names(tree: ast.AST) -> dict[str, str]:
    """Local name -> qualified name for the module's imports (``import numpy as np``, ``from torch import load``)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.AST, names: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(names.get(node.id, node.id))
    return ".".join(reversed(parts))


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """The calls in Python ``source`` that may unpickle (run code from) a file: ``file:line: call``."""
    tree = ast.parse(source, filename)
    names = _qualified_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, names)
        if name is None:
            continue
        name = name.replace("np.", "numpy.", 1) if name.startswith("np.") else name
        where = f"{filename}:{node.lineno}: {ast.unparse(node.func)}(...)"
        if name in _UNSAFE:
            found.append(where)
        elif name == "yaml.load":
            loader = next((k.value for k in node.keywords if k.arg == "Loader"), node.args[1] if len(node.args) > 1 else None)
            if loader is None or not (_dotted(loader, names) or "").endswith(("SafeLoader", "CSafeLoader")):
                found.append(where)
        elif name in _GUARDED:
            keyword, safe, required = _GUARDED[name]
            given = [k for k in node.keywords if k.arg == keyword]
            if any(k.arg is None for k in node.keywords):  # **kwargs: cannot be checked
                found.append(where)
            elif given:
                value = given[0].value
                if not (isinstance(value, ast.Constant) and value.value is safe):
                    found.append(where)
            elif required:
                found.append(where)
    return found


def _library_sources():
    for folder in ("known_ops", "recon", "phantoms", "benchmarks"):
        yield from sorted((ROOT / folder).rglob("*.py"))
    yield ROOT / "setup.py"


def test_the_unsafe_load_finder_finds_unsafe_loads():
    unsafe = [
        "import torch\ntorch.load(p)",
        "import torch\ntorch.load(p, weights_only=False)",
        "import torch\ntorch.load(p, weights_only=flag)",
        "import torch\ntorch.load(p, **options)",
        "from torch import load\nload(p)",
        "import torch as T\nT.load(\n    p,\n    map_location='cpu',\n)",
        "import torch\ntorch.serialization.load(p)",
        "import pickle\npickle.load(f)",
        "import pickle as pk\npk.loads(b)",
        "from pickle import Unpickler\nUnpickler(f).load()",
        "import numpy as np\nnp.load(p, allow_pickle=True)",
        "import numpy\nnumpy.load(p, allow_pickle=ok)",
        "import joblib\njoblib.load(p)",
        "import yaml\nyaml.load(s)",
        "import yaml\nyaml.load(s, Loader=yaml.FullLoader)",
        "import pandas as pd\npd.read_pickle(p)",
        "import shelve\nshelve.open(p)",
        "import torch\ntorch.jit.load(p)",
    ]
    for source in unsafe:
        assert unsafe_loads(source), source
    safe = [
        "import torch\ntorch.load(p, map_location='cpu', weights_only=True)",
        "import numpy as np\nnp.load(p)",
        "import numpy as np\nnp.load(p, allow_pickle=False)",
        "import json\njson.load(f)",
        "import yaml\nyaml.load(s, Loader=yaml.SafeLoader)",
        "import pickle\npickle.dumps(obj)",
        "model.load_state_dict(state)",
    ]
    for source in safe:
        assert not unsafe_loads(source), source


def test_no_unsafe_loads_in_the_library_and_its_scripts():
    """Every torch.load of known_ops, recon, phantoms, benchmarks and setup.py passes weights_only=True,
    and nothing unpickles otherwise: files users pass in are read as data, never run as code."""
    files = list(_library_sources())
    assert len(files) > 20
    found = []
    torch_loads = 0
    for path in files:
        source = path.read_text(encoding="utf-8")
        found += unsafe_loads(source, str(path.relative_to(ROOT)))
        torch_loads += len(re.findall(r"torch\.load\(", source))
    assert torch_loads >= 2  # the checkpoint and image readers of recon.training: the scan sees them
    assert not found, "unsafe loads (pass weights_only=True / allow_pickle=False):\n" + "\n".join(found)
    # Shell scripts that embed Python.
    for path in sorted((ROOT / "benchmarks").rglob("*.sh")):
        for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"torch\.load\(", line) and "weights_only=True" not in line or re.search(r"pickle\.loads?\(", line):
                found.append(f"{path.relative_to(ROOT)}:{k}: {line.strip()}")
    assert not found, "\n".join(found)


def test_what_the_library_saves_loads_with_weights_only(tmp_path):
    """Training checkpoints (with every RNG state) and the state dicts of the modules the library
    builds (FBP with learnable parts, a RayTransform) are plain data."""
    from recon.training.checkpoint import FORMAT, load_checkpoint, rng_state, save_checkpoint

    model = recon.FBP(ko.Volume((8, 8)), ko.FanBeam2D(ko.uniform_angles(6, TWO_PI), 100.0, 50.0, 11), learnable=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(2, 6, 11)).sum().backward()
    optimizer.step()
    checkpoint = {"format": FORMAT, "step": 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "rng": rng_state(), "best": {"psnr": None, "step": None}, "config": {"volume": {"shape": [8, 8]}}}
    save_checkpoint(tmp_path / "last.pt", checkpoint)
    loaded = torch.load(tmp_path / "last.pt", weights_only=True)
    assert loaded["step"] == 1 and set(loaded["model"]) == set(model.state_dict())
    assert load_checkpoint(tmp_path / "last.pt")["rng"]["numpy"]["pos"] == checkpoint["rng"]["numpy"]["pos"]
    torch.save(A.state_dict(), tmp_path / "operator.pt")
    torch.load(tmp_path / "operator.pt", weights_only=True)
