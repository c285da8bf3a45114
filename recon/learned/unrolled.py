"""Unrolled iterative schemes with learned updates (Adler and Oektem).

- :class:`LearnedGradient`: "Solving ill-posed inverse problems using iterative deep neural
  networks", Inverse Problems 33(12), 2017 (the partially learned gradient scheme);
- :class:`LearnedPrimal` and :class:`LearnedPrimalDual`: "Learned primal-dual reconstruction",
  IEEE TMI 37(6), 2018.

The sizes and initialisations follow the authors' reference code (github.com/adler-j,
``learned_gradient_tomography/code/partially_learned_gradient_descent.py`` and
``learned_primal_dual/ellipses/learned_primal{,_dual}.py``); every operator evaluation goes through
the library's operators and the update steps of :mod:`recon.steps` (the same ones the iterative
solvers use). As in the papers the forward operator is divided by its norm, ``A / ||A||``, and the
data by the same number, so that the networks see scale-free inputs; the reconstructions are in the
volume's physical units.
"""
from __future__ import annotations

import torch
from torch import nn

import known_ops as ko
from recon import steps

from ._common import (
    ConvBlock,
    flag,
    flatten_batch,
    initial_reconstruction,
    normalising_norm,
    positive_int,
    ray_transform,
    unflatten_batch,
)

__all__ = ["LearnedGradient", "LearnedPrimal", "LearnedPrimalDual"]


class _Unrolled(nn.Module):
    """Common set-up: the operator normalised by its norm, and the optional FBP start."""

    def __init__(self, volume, geometry, operator, initial: str, fbp_filter: str, fbp_cutoff: float, n_iter: int):
        super().__init__()
        A = ray_transform(volume, geometry, operator)
        self.volume = volume
        self.geometry = geometry
        self.n_iter = positive_int(n_iter, "n_iter")
        # ||A|| by power iteration (deterministic for its fixed seed), in float64.
        self.operator_norm = normalising_norm(A)
        self.operator = A / self.operator_norm
        if initial not in ("zero", "fbp"):
            raise ValueError(f"initial must be 'zero' or 'fbp', got {initial!r}")
        self.initial = initial
        self.fbp = initial_reconstruction(volume, geometry, fbp_filter, fbp_cutoff) if initial == "fbp" else None
        self._ndim = len(volume.shape)
        self._data_ndim = len(geometry.shape)

    def _prepare(self, y: torch.Tensor):
        """(flattened y / ||A||, the leading dims, the start x0 or None) for a batch y."""
        flat, lead = flatten_batch(y, tuple(self.geometry.shape), "y")
        x0 = self.fbp(flat).unsqueeze(1) if self.fbp is not None else None
        return flat.unsqueeze(1) / self.operator_norm, lead, x0

    def _start(self, x0, y_n: torch.Tensor, channels: int) -> torch.Tensor:
        shape = (y_n.shape[0], channels) + tuple(self.volume.shape)
        if x0 is None:
            return y_n.new_zeros(shape)
        return x0.to(y_n.dtype).expand(shape).contiguous()

    def extra_repr(self) -> str:
        return f"n_iter={self.n_iter}, initial={self.initial!r}, operator_norm={self.operator_norm:.6g}"


class LearnedGradient(_Unrolled):
    """The partially learned gradient scheme (Adler and Oektem, Inverse Problems 2017).

    Starting from ``x_0 = FBP(y)`` (``initial="fbp"``, the default; Ram-Lak filter as ODL's
    ``fbp_op``), ``n_iter`` (10) iterations of

        [dx, s] = Lambda(x, A.T(A x - y), grad R(x), s),   s <- relu(s),   x <- x + dx

    with a memory ``s`` of ``n_memory`` (5) channels starting at 0, ``A`` normalised by its norm,
    ``R(x) = 1/2 ||grad x||^2`` (``grad R = grad.T grad x``, :func:`recon.steps.smoothness_gradient`;
    Adler used ODL's partial derivatives with zero padding, here the Neumann forward differences of
    TV) and ``Lambda`` three 3x3 convolutions ``(n_memory + 3) -> 32 -> 32 -> (n_memory + 1)`` with
    ReLU, **shared over the iterations** (about 1.3e4 parameters). Initialisation as the reference
    code (Xavier-normal weights, biases 0.01 for the hidden layers and 0 for the last), except that the
    last layer's weights start at 0 (``zero_init=True``, the default), so that the scheme starts as the
    FBP (every update and the memory are 0); with ``zero_init=False`` they are Xavier-normal as in the
    reference code, and the untrained scheme's output is far from the FBP (measured on Adler's set-up:
    -12 dB validation PSNR at step 0, against 24 dB for the FBP).
    """

    def __init__(self, volume, geometry, n_iter: int = 10, n_memory: int = 5, hidden: int = 32,
                 initial: str = "fbp", fbp_filter: str = "ram-lak", fbp_cutoff: float = 1.0, zero_init: bool = True,
                 operator=None):
        super().__init__(volume, geometry, operator, initial, fbp_filter, fbp_cutoff, n_iter)
        self.n_memory = positive_int(n_memory, "n_memory")
        self.gradient = ko.FiniteDifferenceGradient(volume)
        self.update = ConvBlock(self.n_memory + 3, self.n_memory + 1, positive_int(hidden, "hidden"),
                                activation="relu", ndim=self._ndim, zero_last=flag(zero_init, "zero_init"))
        for layer in (self.update[0], self.update[2]):
            nn.init.constant_(layer.bias, 0.01)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y_n, lead, x0 = self._prepare(y)
        x = self._start(x0, y_n, 1)
        memory = y_n.new_zeros((y_n.shape[0], self.n_memory) + tuple(self.volume.shape))
        for _ in range(self.n_iter):
            data_grad = steps.data_gradient(self.operator, x, y_n)
            reg_grad = steps.smoothness_gradient(self.gradient, x)
            out = self.update(torch.cat([x, data_grad, reg_grad, memory], dim=1))
            memory = torch.relu(out[:, 1:])
            x = x + out[:, :1]
        return unflatten_batch(x[:, 0], lead)


class LearnedPrimalDual(_Unrolled):
    """Learned primal-dual reconstruction (Adler and Oektem, IEEE TMI 2018, algorithm 3).

    ``n_iter`` (10) iterations with ``n_primal`` (5) image channels ``f`` and ``n_dual`` (5)
    projection channels ``h``, both starting at 0 (``initial="fbp"``: every primal channel starts at
    ``FBP(y)``):

        h <- h + Gamma_i([h, A f[1], y])          (convolutions over the projections)
        f <- f + Lambda_i([f, A.T h[0]])          (convolutions over the image)

    returning ``f[0]``; ``A`` and ``y`` are divided by ``||A||``. Each ``Gamma_i`` and ``Lambda_i`` is
    three 3x3 convolutions ``-> 32 -> 32 -> 5`` with PReLU (initialised to 0, i.e. ReLU) and biases,
    Xavier-normal weights, separate for every iteration (about 2.5e5 parameters with the defaults).
    """

    def __init__(self, volume, geometry, n_iter: int = 10, n_primal: int = 5, n_dual: int = 5, hidden: int = 32,
                 initial: str = "zero", fbp_filter: str = "ram-lak", fbp_cutoff: float = 1.0, operator=None):
        super().__init__(volume, geometry, operator, initial, fbp_filter, fbp_cutoff, n_iter)
        self.n_primal = positive_int(n_primal, "n_primal")
        self.n_dual = positive_int(n_dual, "n_dual")
        if self.n_primal < 2:
            raise ValueError(f"n_primal must be at least 2 (channel 1 feeds the operator, channel 0 is the output), got {n_primal}")
        hidden = positive_int(hidden, "hidden")
        self.dual_updates = nn.ModuleList(
            [ConvBlock(self.n_dual + 2, self.n_dual, hidden, ndim=self._data_ndim) for _ in range(self.n_iter)])
        self.primal_updates = nn.ModuleList(
            [ConvBlock(self.n_primal + 1, self.n_primal, hidden, ndim=self._ndim) for _ in range(self.n_iter)])

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y_n, lead, x0 = self._prepare(y)
        primal = self._start(x0, y_n, self.n_primal)
        dual = y_n.new_zeros((y_n.shape[0], self.n_dual) + tuple(self.geometry.shape))
        for dual_update, primal_update in zip(self.dual_updates, self.primal_updates):
            dual = dual + dual_update(torch.cat([dual, self.operator(primal[:, 1:2]), y_n], dim=1))
            primal = primal + primal_update(torch.cat([primal, self.operator.T(dual[:, 0:1])], dim=1))
        return unflatten_batch(primal[:, 0], lead)


class LearnedPrimal(_Unrolled):
    """Learned primal (Adler and Oektem, IEEE TMI 2018): :class:`LearnedPrimalDual` with the learned
    dual step replaced by the residual ``A f[1] - y`` (:func:`recon.steps.residual`):

        f <- f + Lambda_i([f, A.T (A f[1] - y)])

    ``n_iter`` (10) iterations, ``n_primal`` (5) channels, convolutions as in LearnedPrimalDual
    (about 1.3e5 parameters)."""

    def __init__(self, volume, geometry, n_iter: int = 10, n_primal: int = 5, hidden: int = 32,
                 initial: str = "zero", fbp_filter: str = "ram-lak", fbp_cutoff: float = 1.0, operator=None):
        super().__init__(volume, geometry, operator, initial, fbp_filter, fbp_cutoff, n_iter)
        self.n_primal = positive_int(n_primal, "n_primal")
        if self.n_primal < 2:
            raise ValueError(f"n_primal must be at least 2 (channel 1 feeds the operator, channel 0 is the output), got {n_primal}")
        hidden = positive_int(hidden, "hidden")
        self.primal_updates = nn.ModuleList(
            [ConvBlock(self.n_primal + 1, self.n_primal, hidden, ndim=self._ndim) for _ in range(self.n_iter)])

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y_n, lead, x0 = self._prepare(y)
        primal = self._start(x0, y_n, self.n_primal)
        for primal_update in self.primal_updates:
            dual = steps.residual(self.operator, primal[:, 1:2], y_n)
            primal = primal + primal_update(torch.cat([primal, self.operator.T(dual)], dim=1))
        return unflatten_batch(primal[:, 0], lead)
