"""VariationalNetwork: an unrolled gradient scheme with a learned Fields-of-Experts regulariser.

E. Kobler, T. Klatzer, K. Hammernik and T. Pock, "Variational networks: connecting variational
methods and deep learning", GCPR 2017; K. Hammernik, T. Wuerfl, T. Pock and A. Maier, "A deep
learning architecture for limited-angle computed tomography reconstruction", BVM 2017 (the
variational network after an FBP with learned compensation weights). ``docs/learned.md``
has the details.
"""
from __future__ import annotations

import itertools
import math
import numbers

import torch
from torch import nn
from torch.nn import functional as F

import known_ops as ko
from recon import steps

from ._common import (
    check_ndim,
    flag,
    flatten_batch,
    initial_reconstruction,
    normalising_norm,
    positive_int,
    ray_transform,
    unflatten_batch,
)

__all__ = ["VariationalNetwork"]


def _positive_float(value, name: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'} and finite, got {value}")
    return value


def _rbf_window(dtype: torch.dtype) -> int:
    """Half-width ``M`` of the window of centres that :class:`_GaussianRBFSum` sums: the ``2 M``
    centres around ``u`` (``floor(u) - M + 1 .. floor(u) + M``); the others lie at least ``M`` grid
    spacings away and add at most ``2 exp(-M^2 / 2) max|w|``: 3e-8 for float32 (``M = 6``), 5e-18
    for float64 (``M = 9``), below the rounding of the sum."""
    return 9 if dtype == torch.float64 else 6


def _rbf_terms(u: torch.Tensor, w: torch.Tensor):
    """The window's set-up: ``r = u - floor(u)`` in ``[0, 1)`` (``u`` clamped to the window's reach),
    ``exp(-r^2/2)``, ``exp(r)``, ``exp(-r)``, flat indices into the zero-padded weight rows (flat)
    and ``M``: the weight of centre ``floor(u) + m`` is ``table[M + m:][index]`` (a shifted view of
    the table rather than ``index + m``, which would cost a pass over an int64 tensor per term)."""
    M = _rbf_window(u.dtype)
    n_filters, n_rbf = w.shape
    padded = n_rbf + 4 * M  # every window index stays inside its filter's padded row
    uc = u.clamp(-M, n_rbf - 1 + M)  # beyond: phi' < 2 exp(-M^2/2) max|w|, taken constant
    c = torch.floor(uc)
    r = uc - c
    shape = (1, -1) + (1,) * (u.dim() - 2)
    rows = (2 * M + padded * torch.arange(n_filters, device=u.device)).reshape(shape)
    index = c.to(torch.int64) + rows - M  # >= 0, and index + M + m < len(table) for |m| <= M
    table = F.pad(w, (2 * M, 2 * M)).reshape(-1)
    return r, torch.exp(-0.5 * r.square()), torch.exp(r), torch.exp(-r), index, table, M


def _rbf_window_terms(g0, e_up, e_down, M):
    """``(m, exp(-r^2/2 + m r), exp(-m^2/2))`` for ``m = 0, 1, .., M, -1, .., -M + 1``: the Gaussian
    ``exp(-(r - m)^2 / 2)`` is the product of the last two; the middle one by repeated products
    with ``exp(+-r)`` (``r`` in ``[0, 1)``: no overflow; relative error ``|m|`` roundings). The
    yielded tensor is updated in place by the next step."""
    yield 0, g0, 1.0
    for sign, factor in ((1, e_up), (-1, e_down)):
        g = g0.clone()
        for k in range(1, M + 1 if sign > 0 else M):
            g.mul_(factor)
            yield sign * k, g, math.exp(-0.5 * k * k)


class _GaussianRBFSum(torch.autograd.Function):
    """``out[n, i, ...] = sum_j w[i, j] exp(-(u[n, i, ...] - j)^2 / 2)`` for ``u`` of shape
    ``(N, n_filters, *spatial)`` (the filter response in units of the grid spacing, counted from the
    first centre) and ``w`` of shape ``(n_filters, n_rbf)``, both of one dtype (float32/float64).

    Only the ``2 M`` centres nearest to each ``u`` are summed (:func:`_rbf_window`: the rest is below
    rounding), with the weights gathered (``index_select``: twice as fast as ``take`` on the CPU) from
    a zero-padded table and the Gaussians from three
    exponentials per element (:func:`_rbf_window_terms`): three passes over ``u`` per centre instead
    of five for each of the 31 centres of the plain sum (forward and backward on Adler's set-up, one
    CPU thread: 0.4 s per stage against 1.9 s for autograd through the plain sum). The backward
    recomputes the Gaussians instead of saving them (autograd through the plain sum would keep
    ``n_rbf`` tensors of the size of ``u`` per stage, gigabytes for Adler's set-up); its gradient is
    the exact one of the computed sum."""

    @staticmethod
    def forward(ctx, u, w):
        ctx.save_for_backward(u, w)
        r, g0, e_up, e_down, index, table, M = _rbf_terms(u, w)
        out = torch.zeros_like(u)
        flat_index = index.reshape(-1)
        for m, g, k in _rbf_window_terms(g0, e_up, e_down, M):
            out.addcmul_(table[M + m:].index_select(0, flat_index).view(u.shape), g, value=k)
        return out

    @staticmethod
    def backward(ctx, grad):
        u, w = ctx.saved_tensors
        r, g0, e_up, e_down, index, table, M = _rbf_terms(u, w)
        need_u, need_w = ctx.needs_input_grad[:2]
        value = torch.zeros_like(u) if need_u else None
        moment = torch.zeros_like(u) if need_u else None
        grad_table = torch.zeros_like(table) if need_w else None
        flat_index = index.reshape(-1)
        for m, g, k in _rbf_window_terms(g0, e_up, e_down, M):
            if need_u:  # d/du exp(-(r - m)^2 / 2) = (m - r) exp(-(r - m)^2 / 2)
                weight = table[M + m:].index_select(0, flat_index).view(u.shape)
                value.addcmul_(weight, g, value=k)
                moment.addcmul_(weight, g, value=m * k)
            if need_w:
                grad_table[M + m:].index_add_(0, flat_index, (grad * g).reshape(-1), alpha=k)
        grad_u = grad * (moment - r * value) if need_u else None
        grad_w = None
        if need_w:
            grad_w = grad_table.reshape(w.shape[0], -1)[:, 2 * M: 2 * M + w.shape[1]]
        return grad_u, grad_w


def dct_filters(n_filters: int, kernel_size: int, ndim: int) -> torch.Tensor:
    """``(n_filters, 1, *[kernel_size] * ndim)`` float64 filters: the separable DCT-II atoms without
    the constant one, lowest frequencies first (ordered by the sum of the frequency indices, then
    lexicographically), orthonormal and zero-mean (the initialisation of TNRD, Chen and Pock 2017).
    More filters than the ``kernel_size**ndim - 1`` atoms: the rest are random zero-mean unit-norm
    filters (torch's global random state)."""
    k = kernel_size
    n = torch.arange(k, dtype=torch.float64)
    basis = torch.cos(math.pi * (n[None, :] + 0.5) * n[:, None] / k)  # (frequency, position)
    basis = basis / torch.linalg.vector_norm(basis, dim=1, keepdim=True)
    indices = sorted((idx for idx in itertools.product(range(k), repeat=ndim) if any(idx)), key=lambda idx: (sum(idx), idx))
    atoms = []
    for idx in indices[:n_filters]:
        atom = basis[idx[0]]
        for f in idx[1:]:
            atom = atom[..., None] * basis[f]
        atoms.append(atom)
    for _ in range(n_filters - len(atoms)):
        atom = torch.randn((k,) * ndim, dtype=torch.float64)
        atom = atom - atom.mean()
        atoms.append(atom / torch.linalg.vector_norm(atom))
    return torch.stack(atoms)[:, None]


def _regulariser_lipschitz(filters: torch.Tensor) -> float:
    """``|| sum_i K_i^T K_i ||`` for zero-padded convolutions with ``filters`` ``(n, 1, *k)``:
    ``max_omega sum_i |k_i^(omega)|^2`` on a fine frequency grid (an upper bound up to the grid)."""
    ndim = filters.dim() - 2
    size = max(4 * filters.shape[-1], 64 if ndim == 2 else 32)
    spectrum = torch.fft.fftn(filters[:, 0], s=(size,) * ndim, dim=tuple(range(1, ndim + 1)))
    return float(spectrum.abs().square().sum(0).max())


class VariationalNetwork(nn.Module):
    """A variational network (Kobler et al. 2017; Hammernik et al. 2017): ``T`` stages of

        x <- x - ( sum_i K_i^T phi_i'(K_i x) + lambda_t A_n^T (A_n x - y_n) ),

    from ``x_0 = initial(y)``, with ``A_n = A / ||A||`` and ``y_n = y / ||A||`` (so ``lambda_t = 1``
    is a Landweber step of size ``1 / ||A||^2`` whatever the scale of the operator), and per stage:

    - ``K_i``: ``n_filters`` convolutions of ``kernel_size`` (zero padding, 'same' size), zero-mean
      with ``||k_i||_2 <= 1`` by reparametrisation: ``k = v / max(1, ||v||)`` with ``v = k_raw -
      mean(k_raw)`` (Hammernik's zero-mean and bounded-norm constraints, enforced in the forward
      instead of by projection); ``K_i^T`` is the transposed convolution with the same kernels, the
      exact adjoint, so the update is the exact gradient of the stage's energy
      ``sum_i sum_p phi_i((K_i x)_p) + lambda_t / 2 ||A_n x - y_n||^2``;
    - ``phi_i'(z) = sum_j w_ij exp(-(z - mu_j)^2 / (2 h^2))``: ``n_rbf`` Gaussians on the fixed grid
      ``mu_j = -v_max + j h``, ``h = 2 v_max / (n_rbf - 1)`` (width = spacing), learned weights
      ``w_ij``; outside about ``[-v_max - 2h, v_max + 2h]`` ``phi'`` vanishes, so ``v_max`` should
      cover the filter responses that matter (the responses of unit-norm filters to the image);
    - ``lambda_t = softplus(rho_t) >= 0``.

    Initialisation (the network starts as the initial reconstruction plus ``T`` small gradient steps
    of a quadratic smoothing prior and the data term): every stage's kernels are the
    ``n_filters`` lowest-frequency 2D (3D) DCT atoms without the constant one (orthonormal and
    zero-mean, as TNRD); ``w_ij = alpha mu_j / sqrt(2 pi)``, which makes ``phi_i'(z) = alpha z`` to
    1e-8 on ``|z| <= v_max - 5h`` (0.6 % low at ``v_max - 2h``, tapering to 0 beyond ``v_max``),
    the gradient of the quadratic prior ``alpha / 2 sum_i ||K_i x||^2``, with ``alpha =
    init_smoothing / L``, ``L = ||sum_i K_i^T K_i||`` (49 for the default filters), so
    ``init_smoothing`` is the step relative to the prior's Lipschitz constant; ``lambda_t =
    init_lambda``. Measured with the defaults: the output differs from the initial FBP by 4.3 %
    (relative L2) on Adler's set-up (128^2 random ellipses, 30 views, with or without 5 % noise;
    the error against the truth drops from 0.447 to 0.417 noise-free), 4.6 % on 16^2 images with
    12 views.

    The papers, as followed here (the BVM paper's text was not at hand to check its sizes): Kobler et al. unroll gradient descent on Fields-of-Experts energies with
    parameters that change per stage, ``phi'`` as a weighted sum of Gaussian RBFs on an
    equidistant grid, filters constrained to zero mean (and, in Hammernik's VN code, to a bounded
    norm), ``lambda_t >= 0``; Hammernik et al. (BVM 2017) put such a network after Wuerfl's FBP
    with learned compensation weights to remove the remaining limited-angle streaks (here
    ``initial=LearnedFBP(...)``, trained first and frozen, or jointly with ``train_initial``).
    Changed here: the constraints are reparametrisations (zero mean by subtraction, the norm bound
    by division, ``lambda`` by softplus) instead of projections after each optimiser step, so any
    optimiser works; the convolutions use zero padding (CT images vanish outside the object) and
    ``K^T`` is their exact adjoint; the data term works on ``A / ||A||``; the DCT initialisation
    and the linear (quadratic-prior) start of ``phi'``; the defaults (24 filters of 7x7, 31 RBFs,
    10 stages) are the project's specification, not numbers checked against the BVM paper
    (Hammernik's MRI network used 24 filters of 11x11, 31 RBFs and 10 stages).

    Args:
        volume, geometry: the reconstruction grid and the scan (2D, or 3D with 3D convolutions).
        n_stages: ``T`` (default 10).
        n_filters, kernel_size: filters per stage and their (odd) size (default 24 of 7x7; 3D: 7^3).
        n_rbf, v_max: RBFs per activation and the grid's half-range (default 31 on [-1, 1], for
            images of values of order 1 such as Adler's ellipses; scale ``v_max`` with the image).
        init_lambda: ``lambda_t`` at initialisation (default 0.1).
        init_smoothing: the initial quadratic prior's step relative to ``1 / L`` (default 0.01; 0
            starts with ``phi' = 0``).
        initial: ``"fbp"`` (default): a frozen ``recon.FBP`` with ``fbp_filter`` and ``fbp_cutoff``
            (default Ram-Lak, cut-off 1, i.e. an untrained ``LearnedFBP``); or a module mapping
            ``(N, *geometry.shape)`` to ``(N, *volume.shape)``, e.g. a trained ``LearnedFBP``
            (Hammernik's set-up).
        train_initial: train the ``initial`` module's parameters jointly (``True``) or freeze them
            (``False``, default: ``requires_grad_(False)`` on the given module, and it stays in eval
            mode when the network trains). ``initial="fbp"`` has nothing to train.
        operator_norm: ``||A||`` if known (default: ``A.norm()``, power iteration at construction).
        operator: the forward operator ``A`` (default ``RayTransform(volume, geometry)``, Joseph's).

    Parameters (``count_parameters``): ``T (n_filters (kernel_size^ndim + n_rbf) + 1)``: 19,210 for
    the defaults (plus those of a trained ``initial``): ``kernels`` ``(T, n_filters, 1, *kernel)``
    (raw; :meth:`filters` gives the effective ones), ``rbf_weights`` ``(T, n_filters, n_rbf)`` and
    ``lambda_raw`` ``(T,)`` (:attr:`lambdas`). Attributes: ``operator`` (``A / ||A||``),
    ``operator_norm``, ``initial``; :meth:`activation` evaluates a stage's ``phi_i'``.
    """

    def __init__(self, volume: ko.Volume, geometry, n_stages: int = 10, n_filters: int = 24, kernel_size: int = 7,
                 n_rbf: int = 31, v_max: float = 1.0, init_lambda: float = 0.1, init_smoothing: float = 0.01,
                 initial="fbp", train_initial: bool = False, fbp_filter: str = "ram-lak", fbp_cutoff: float = 1.0,
                 operator_norm: float | None = None, operator=None):
        super().__init__()
        A = ray_transform(volume, geometry, operator)
        self.ndim = check_ndim(volume, "VariationalNetwork")
        self.n_stages = positive_int(n_stages, "n_stages")
        self.n_filters = positive_int(n_filters, "n_filters")
        self.kernel_size = positive_int(kernel_size, "kernel_size")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centred 'same' convolution), got {kernel_size}")
        self.n_rbf = positive_int(n_rbf, "n_rbf", minimum=2)
        self.v_max = _positive_float(v_max, "v_max")
        init_lambda = _positive_float(init_lambda, "init_lambda")
        init_smoothing = _positive_float(init_smoothing, "init_smoothing", allow_zero=True)
        self.train_initial = flag(train_initial, "train_initial")
        self.volume = volume
        self.geometry = geometry

        if isinstance(initial, str):
            if initial != "fbp":
                raise ValueError(f"initial must be 'fbp' or a module, got {initial!r}")
            if self.train_initial:
                raise ValueError("train_initial=True needs a module with parameters as initial (e.g. a LearnedFBP); "
                                 "initial='fbp' is a frozen FBP")
            initial = initial_reconstruction(volume, geometry, fbp_filter, fbp_cutoff)
        elif isinstance(initial, nn.Module):
            if self.train_initial:
                if not any(p.requires_grad for p in initial.parameters()):
                    raise ValueError("train_initial=True: the initial module has no trainable parameters")
            else:
                initial.requires_grad_(False)
                initial.eval()
        else:
            raise TypeError(f"initial must be 'fbp' or an nn.Module mapping projections to images, got {type(initial).__name__}")
        self.initial = initial

        if operator_norm is None:
            operator_norm = normalising_norm(A)
        self.operator_norm = _positive_float(operator_norm, "operator_norm")
        self.operator = A / self.operator_norm

        filters = dct_filters(self.n_filters, self.kernel_size, self.ndim)
        alpha = init_smoothing / _regulariser_lipschitz(filters)
        self.spacing = 2.0 * self.v_max / (self.n_rbf - 1)
        centres = -self.v_max + self.spacing * torch.arange(self.n_rbf, dtype=torch.float64)
        weights = (alpha / math.sqrt(2 * math.pi)) * centres.expand(self.n_filters, self.n_rbf)
        dtype = torch.get_default_dtype()
        self.kernels = nn.Parameter(filters.expand((self.n_stages,) + filters.shape).clone().to(dtype))
        self.rbf_weights = nn.Parameter(weights.expand(self.n_stages, -1, -1).clone().to(dtype))
        rho = math.log(math.expm1(init_lambda))  # softplus^-1
        self.lambda_raw = nn.Parameter(torch.full((self.n_stages,), rho, dtype=dtype))

    # --- the learned parts --------------------------------------------------------------------------

    def filters(self) -> torch.Tensor:
        """The effective kernels ``(T, n_filters, 1, *kernel)``: zero-mean, norm at most 1."""
        dims = tuple(range(3, self.kernels.dim()))
        v = self.kernels - self.kernels.mean(dim=dims, keepdim=True)
        return v / torch.clamp(torch.linalg.vector_norm(v, dim=dims, keepdim=True), min=1.0)

    @property
    def lambdas(self) -> torch.Tensor:
        """``lambda_t = softplus(rho_t)``, shape ``(T,)``."""
        return F.softplus(self.lambda_raw)

    def activation(self, stage: int, z: torch.Tensor) -> torch.Tensor:
        """``phi_i'(z)`` of ``stage`` for ``z`` of shape ``(..., n_filters)`` (for plotting)."""
        w = self.rbf_weights[stage]
        u = (z.to(w.dtype) + self.v_max) / self.spacing
        flat = u.reshape(-1, self.n_filters, 1)
        return _GaussianRBFSum.apply(flat, w).reshape(u.shape)

    def regulariser_gradient(self, x: torch.Tensor, kernels: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``sum_i K_i^T phi_i'(K_i x)`` for ``x`` of shape ``(N, *volume.shape)``, one stage's
        effective ``kernels`` ``(n_filters, 1, *kernel)`` and RBF weights ``w`` ``(n_filters, n_rbf)``."""
        conv, conv_t = (F.conv2d, F.conv_transpose2d) if self.ndim == 2 else (F.conv3d, F.conv_transpose3d)
        pad = self.kernel_size // 2
        z = conv(x.unsqueeze(1), kernels, padding=pad)  # (N, n_filters, *volume.shape)
        u = (z.to(w.dtype) + self.v_max) / self.spacing  # autocast: the RBFs run in the weights' dtype
        return conv_t(_GaussianRBFSum.apply(u, w), kernels, padding=pad).squeeze(1)

    # --- the network --------------------------------------------------------------------------------

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y, lead = flatten_batch(y, tuple(self.geometry.shape), "y")
        x = self.initial(y)
        if tuple(x.shape) != (y.shape[0],) + tuple(self.volume.shape):
            raise ValueError(f"initial must map (N, *geometry.shape) to (N, *volume.shape) = "
                             f"{(y.shape[0],) + tuple(self.volume.shape)}, got {tuple(x.shape)}")
        y_n = y / self.operator_norm
        kernels, lambdas = self.filters(), self.lambdas
        for t in range(self.n_stages):
            update = self.regulariser_gradient(x, kernels[t], self.rbf_weights[t])
            x = x - (update + lambdas[t] * steps.data_gradient(self.operator, x, y_n))
        return unflatten_batch(x, lead)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.train_initial:
            self.initial.eval()  # a frozen initial module (e.g. with batch norm) keeps its behaviour
        return self

    def extra_repr(self) -> str:
        return (f"n_stages={self.n_stages}, n_filters={self.n_filters}, kernel_size={self.kernel_size}, "
                f"n_rbf={self.n_rbf}, v_max={self.v_max:g}, operator_norm={self.operator_norm:.6g}, "
                f"train_initial={self.train_initial}")
