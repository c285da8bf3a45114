"""Linear operators: one named type for every known operator that solvers and learned models use.

A :class:`LinearOperator` is an ``nn.Module`` mapping tensors of shape ``(..., *domain_shape)`` to
``(..., *range_shape)`` (leading dims are batch/channel dims), with an exact adjoint ``op.T``.
The algebra is ODL's, kept torch-native:

- ``op(x)``, ``op.T(y)``, ``op.T.T is op``;
- composition ``A @ B`` (``x -> A(B(x))``), sums ``A + B``, ``A - B``, ``-A``;
- scalar multiples ``c * A``, ``A * c``, ``A / c`` (learned primal-dual uses ``A / ||A||``);
- ``op.norm()`` (power iteration, :func:`known_ops.operator_norm`) and
  :func:`adjointness_test`.

``op.T`` owns ``op`` as a registered submodule, so a model that stores only ``op.T`` still moves
``op``'s tables with ``model.to(device)``; ``op`` keeps ``op.T`` as a plain (cached) reference, so
the two do not own each other. Instances in this package: :class:`known_ops.RayTransform`,
:class:`FiniteDifferenceGradient` (the gradient of total variation), :class:`MatrixOperator`
(a dense matrix, for tests and small problems) and the rebinning operators.

Subclasses implement ``forward(x)``, ``adjoint(y)``, ``domain_shape`` and ``range_shape``.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from .geometry import Volume, _finite_float

__all__ = [
    "LinearOperator",
    "ComposedOperator",
    "SumOperator",
    "ScaledOperator",
    "IdentityOperator",
    "MatrixOperator",
    "FiniteDifferenceGradient",
    "adjointness_test",
    "check_linear_operator",
]


def _shape_tuple(shape, name: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(n) for n in shape)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of positive integers, got {shape!r}") from None
    if not dims or any(n < 1 for n in dims):
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {shape!r}")
    return dims


def _scalar(value, name: str) -> float:
    """A finite real number (a one-element tensor without gradient counts as one)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.requires_grad:
        value = value.item()
    return _finite_float(value, name)


def check_trailing_shape(t: torch.Tensor, name: str, expected: tuple[int, ...], what: str) -> None:
    """Raise ValueError unless ``t`` has shape ``(..., *expected)``."""
    if t.dim() < len(expected) or tuple(t.shape[t.dim() - len(expected):]) != tuple(expected):
        raise ValueError(f"{name} must have shape (..., {', '.join(map(str, expected))}) ({what}), got {tuple(t.shape)}")


class LinearOperator(nn.Module):
    """Base class of linear operators; see the module docstring."""

    #: shape of one input item (subclasses set it or define a property)
    domain_shape: tuple[int, ...]
    #: shape of one output item
    range_shape: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x)")

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement adjoint(y)")

    @property
    def T(self) -> "LinearOperator":
        """The adjoint operator (cached; it owns ``self`` as a submodule)."""
        adjoint = self.__dict__.get("_adjoint_op")
        if adjoint is None:
            adjoint = AdjointOperator(self)
            self.__dict__["_adjoint_op"] = adjoint  # plain attribute: not a submodule of self
        return adjoint

    # --- algebra ----------------------------------------------------------------------------------

    def __matmul__(self, other):
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return ComposedOperator(self, other)

    def __add__(self, other):
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return SumOperator(self, other)

    def __sub__(self, other):
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return SumOperator(self, ScaledOperator(other, -1.0))

    def __neg__(self):
        return ScaledOperator(self, -1.0)

    def __mul__(self, scalar):
        if isinstance(scalar, LinearOperator):
            raise TypeError("use A @ B to compose two linear operators (A * B is for a scalar B)")
        try:
            return ScaledOperator(self, scalar)
        except TypeError:
            return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, scalar):
        value = _scalar(scalar, "divisor")
        if value == 0:
            raise ZeroDivisionError("cannot divide a linear operator by zero")
        return ScaledOperator(self, 1.0 / value)

    # --- measures ---------------------------------------------------------------------------------

    def norm(self, **kwargs) -> float:
        """``||op||_2`` by power iteration (:func:`known_ops.operator_norm`; keyword arguments go there)."""
        from .linalg import operator_norm

        return operator_norm(self, **kwargs)

    def adjointness_test(self, **kwargs) -> float:
        """:func:`adjointness_test` of this operator."""
        return adjointness_test(self, **kwargs)

    def _device(self) -> torch.device:
        """The device of the operator's tensors (buffers, then parameters); CPU when it has none."""
        for t in self.buffers():
            return t.device
        for t in self.parameters():
            return t.device
        return torch.device("cpu")


class AdjointOperator(LinearOperator):
    """``op.T``: swaps ``op``'s forward and adjoint; ``op`` is its registered submodule ``op``."""

    def __init__(self, op: LinearOperator):
        super().__init__()
        self.op = op

    @property
    def T(self) -> LinearOperator:
        return self.op

    @property
    def domain_shape(self) -> tuple[int, ...]:
        return tuple(self.op.range_shape)

    @property
    def range_shape(self) -> tuple[int, ...]:
        return tuple(self.op.domain_shape)

    def forward(self, y, *args, **kwargs):
        return self.op.adjoint(y, *args, **kwargs)

    def adjoint(self, x, *args, **kwargs):
        return self.op(x, *args, **kwargs)

    def __repr__(self):
        return f"adjoint({self.op!r})"


class ComposedOperator(LinearOperator):
    """``outer @ inner``: ``x -> outer(inner(x))``, adjoint ``y -> inner.T(outer.T(y))``."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator):
        super().__init__()
        if tuple(inner.range_shape) != tuple(outer.domain_shape):
            raise ValueError(
                f"cannot compose: the inner operator's range {tuple(inner.range_shape)} is not the outer operator's "
                f"domain {tuple(outer.domain_shape)}"
            )
        self.outer = outer
        self.inner = inner

    @property
    def domain_shape(self):
        return tuple(self.inner.domain_shape)

    @property
    def range_shape(self):
        return tuple(self.outer.range_shape)

    def forward(self, x):
        return self.outer(self.inner(x))

    def adjoint(self, y):
        return self.inner.adjoint(self.outer.adjoint(y))


class SumOperator(LinearOperator):
    """``first + second`` (the same domain and range)."""

    def __init__(self, first: LinearOperator, second: LinearOperator):
        super().__init__()
        if tuple(first.domain_shape) != tuple(second.domain_shape) or tuple(first.range_shape) != tuple(second.range_shape):
            raise ValueError(
                "cannot add operators with different shapes: "
                f"{tuple(first.domain_shape)} -> {tuple(first.range_shape)} and "
                f"{tuple(second.domain_shape)} -> {tuple(second.range_shape)}"
            )
        self.first = first
        self.second = second

    @property
    def domain_shape(self):
        return tuple(self.first.domain_shape)

    @property
    def range_shape(self):
        return tuple(self.first.range_shape)

    def forward(self, x):
        return self.first(x) + self.second(x)

    def adjoint(self, y):
        return self.first.adjoint(y) + self.second.adjoint(y)


class ScaledOperator(LinearOperator):
    """``scalar * op`` for a real, finite ``scalar`` (a Python float; extra arguments such as
    ``views=`` pass through to ``op``)."""

    def __init__(self, op: LinearOperator, scalar):
        super().__init__()
        if not isinstance(op, LinearOperator):
            raise TypeError(f"op must be a LinearOperator, got {type(op).__name__}")
        self.op = op
        self.scalar = _scalar(scalar, "scalar")

    @property
    def domain_shape(self):
        return tuple(self.op.domain_shape)

    @property
    def range_shape(self):
        return tuple(self.op.range_shape)

    def forward(self, x, *args, **kwargs):
        return self.op(x, *args, **kwargs) * self.scalar

    def adjoint(self, y, *args, **kwargs):
        return self.op.adjoint(y, *args, **kwargs) * self.scalar

    def extra_repr(self) -> str:
        return f"scalar={self.scalar:.6g}"


class IdentityOperator(LinearOperator):
    """The identity on tensors of shape ``(..., *shape)``."""

    def __init__(self, shape):
        super().__init__()
        self.domain_shape = self.range_shape = _shape_tuple(shape, "shape")

    def forward(self, x):
        check_trailing_shape(x, "x", self.domain_shape, "the operator's domain")
        return x

    def adjoint(self, y):
        check_trailing_shape(y, "y", self.range_shape, "the operator's range")
        return y


class MatrixOperator(LinearOperator):
    """A dense matrix ``M`` (``prod(range_shape) x prod(domain_shape)``) as a linear operator,
    for tests and small problems. ``M`` is a frozen buffer in its own dtype; inputs are cast to it
    and outputs back to the input's dtype."""

    def __init__(self, matrix, domain_shape=None, range_shape=None):
        super().__init__()
        m = torch.as_tensor(matrix)
        if m.dim() != 2 or not m.dtype.is_floating_point:
            raise ValueError(f"matrix must be a 2D floating-point tensor, got shape {tuple(m.shape)} and {m.dtype}")
        self.domain_shape = _shape_tuple(domain_shape if domain_shape is not None else (m.shape[1],), "domain_shape")
        self.range_shape = _shape_tuple(range_shape if range_shape is not None else (m.shape[0],), "range_shape")
        if math.prod(self.domain_shape) != m.shape[1] or math.prod(self.range_shape) != m.shape[0]:
            raise ValueError(
                f"matrix of shape {tuple(m.shape)} does not map {self.domain_shape} to {self.range_shape}"
            )
        self.register_buffer("matrix", m.detach().clone())

    def _apply_matrix(self, m, t, in_shape, out_shape, name):
        check_trailing_shape(t, name, in_shape, "the operator's " + ("domain" if name == "x" else "range"))
        lead = t.shape[: t.dim() - len(in_shape)]
        flat = t.reshape(-1, math.prod(in_shape)).to(m.dtype)
        return (flat @ m.T).to(t.dtype).reshape(lead + out_shape)

    def forward(self, x):
        return self._apply_matrix(self.matrix, x, self.domain_shape, self.range_shape, "x")

    def adjoint(self, y):
        return self._apply_matrix(self.matrix.T, y, self.range_shape, self.domain_shape, "y")


# --- the finite-difference gradient (total variation) ----------------------------------------------


def forward_differences(x: torch.Tensor, spacing: tuple[float, ...]) -> torch.Tensor:
    """Forward differences over the last ``len(spacing)`` dims, divided by the spacing, zero across
    the far edge (Neumann): ``(..., *shape) -> (..., ndim, *shape)``, components in array order."""
    ndim = len(spacing)
    parts = []
    for d, h in enumerate(spacing):
        dim = x.dim() - ndim + d
        diff = torch.diff(x, dim=dim) / h
        edge = torch.zeros_like(x.narrow(dim, 0, 1))
        parts.append(torch.cat([diff, edge], dim=dim))
    return torch.stack(parts, dim=x.dim() - ndim)


def forward_differences_adjoint(g: torch.Tensor, spacing: tuple[float, ...]) -> torch.Tensor:
    """The exact adjoint of :func:`forward_differences` (minus the divergence): ``(..., ndim, *shape) -> (..., *shape)``."""
    ndim = len(spacing)
    comp = g.dim() - ndim - 1
    out = None
    for d, h in enumerate(spacing):
        gd = g.select(comp, d)
        dim = gd.dim() - ndim + d
        n = gd.shape[dim]
        inner = gd.narrow(dim, 0, n - 1)  # the components that forward differences produce
        zero = torch.zeros_like(gd.narrow(dim, 0, 1))
        term = (torch.cat([zero, inner], dim=dim) - torch.cat([inner, zero], dim=dim)) / h
        out = term if out is None else out + term
    return out


class FiniteDifferenceGradient(LinearOperator):
    """The discrete gradient of total variation: forward differences divided by the voxel spacing
    (value per mm), zero across the far edge of each axis (Neumann boundary).

    Maps ``(..., *shape)`` to ``(..., ndim, *shape)`` (components in array order: ``d/dy, d/dx``
    in 2D, ``d/dz, d/dy, d/dx`` in 3D). ``FiniteDifferenceGradient(volume)`` takes the shape and
    spacing of a :class:`known_ops.Volume`; ``FiniteDifferenceGradient(shape, spacing)`` works on a
    bare shape. ``norm_bound()`` is the bound ``||grad||^2 < 4 sum_d 1 / h_d^2``.
    """

    def __init__(self, volume_or_shape, spacing=None):
        super().__init__()
        if isinstance(volume_or_shape, Volume):
            if spacing is not None:
                raise ValueError("give spacing only with a bare shape; a Volume carries its own spacing")
            shape, spacing = volume_or_shape.shape, volume_or_shape.spacing
        else:
            shape = _shape_tuple(volume_or_shape, "shape")
            if spacing is None:
                spacing = 1.0
        if isinstance(spacing, numbers.Real) and not isinstance(spacing, bool):
            spacing = (spacing,) * len(shape)
        spacing = tuple(_scalar(s, f"spacing[{k}]") for k, s in enumerate(spacing))
        if len(spacing) != len(shape) or any(s <= 0 for s in spacing):
            raise ValueError(f"spacing must be {len(shape)} positive numbers (one per axis), got {spacing}")
        self.shape = tuple(shape)
        self.spacing = spacing
        self.domain_shape = self.shape
        self.range_shape = (len(self.shape),) + self.shape

    def forward(self, x):
        check_trailing_shape(x, "x", self.domain_shape, "the image's shape")
        return forward_differences(x, self.spacing)

    def adjoint(self, g):
        check_trailing_shape(g, "g", self.range_shape, "(ndim, *image shape)")
        return forward_differences_adjoint(g, self.spacing)

    def norm_bound(self) -> float:
        """An upper bound of ``||grad||``: ``sqrt(4 sum_d 1 / h_d^2)``."""
        return math.sqrt(4.0 * sum(1.0 / h**2 for h in self.spacing))

    def extra_repr(self) -> str:
        return f"shape={self.shape}, spacing={self.spacing}"


# --- checks -----------------------------------------------------------------------------------------


def check_linear_operator(A, name: str = "A") -> LinearOperator:
    """``A`` if it is a :class:`LinearOperator`, else a TypeError that says what is expected."""
    if not isinstance(A, LinearOperator):
        raise TypeError(
            f"{name} must be a linear operator: a known_ops.LinearOperator (e.g. a RayTransform, "
            f"FiniteDifferenceGradient or MatrixOperator, or a composition of them), got {type(A).__name__}"
        )
    return A


def adjointness_test(
    A: LinearOperator, n_trials: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64, device=None, batch: int = 1
) -> float:
    """The largest ``|<A x, y> - <x, A.T y>| / (||A x|| ||y||)`` over ``n_trials`` random pairs
    (standard normal ``x`` and ``y``, a CPU generator seeded with ``seed``), in ``dtype`` (float64 by
    default: an exact pair gives ~1e-16; the quality bar is 1e-6), on ``device`` (default: the
    operator's). ``batch > 1`` draws a batch of that many items and compares over the whole batch."""
    A = check_linear_operator(A)
    if isinstance(n_trials, bool) or not isinstance(n_trials, numbers.Integral) or n_trials < 1:
        raise ValueError(f"n_trials must be a positive integer, got {n_trials!r}")
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    device = A._device() if device is None else torch.device(device)
    gen = torch.Generator().manual_seed(int(seed))
    worst = 0.0
    lead = (batch,) if batch > 1 else ()
    with torch.no_grad():
        for _ in range(int(n_trials)):
            x = torch.randn(lead + tuple(A.domain_shape), generator=gen, dtype=torch.float64).to(device, dtype)
            y = torch.randn(lead + tuple(A.range_shape), generator=gen, dtype=torch.float64).to(device, dtype)
            Ax, ATy = A(x), A.T(y)
            scale = float(torch.linalg.vector_norm(Ax) * torch.linalg.vector_norm(y))
            if scale == 0.0:
                continue
            worst = max(worst, abs(float(torch.sum(Ax * y)) - float(torch.sum(x * ATy))) / scale)
    return worst
