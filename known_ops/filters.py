"""Ramp filtering of projections along the detector rows (the "F" of FBP / FDK), as a module.

Conventions and scaling: docs/filters_and_weights.md. In short, ``RampFilter(det_count, tau)(p)``
is the discrete convolution ``q[i] = tau * sum_k h[i - k] p[k]`` along the last axis, where ``h`` is
the band-limited ramp kernel of Kak & Slaney (1988, ch. 3, eq. (61)) for the bin spacing ``tau``,
optionally windowed. With ``p`` line integrals (value x mm), ``q`` has the units of the image
value (per radian of scan angle): a parallel-beam FBP is ``delta_theta * sum_views q(x cos t + y sin t)``.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn

from ._dtypes import floating_input
from ._memory import check_fits, nbytes
from .geometry import _positive_int, _positive_length

__all__ = ["RampFilter", "WINDOWS"]

WINDOWS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")

# Float64 arrays of the padded length that _frequency_response holds at once, at most (measured
# peak: about 5 for a flat detector, 8.6 with arc_radius).
_RESPONSE_ARRAYS = 9


# --- helpers (float64 numpy; also used by the tests) -----------------------------------------------


def _fast_length(n: int) -> int:
    """The smallest m >= n whose only prime factors are 2, 3 and 5 (a fast FFT length)."""
    m = max(int(n), 1)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _signed_indices(n_pad: int) -> np.ndarray:
    """Kernel offsets m of the circular positions 0 ... n_pad-1: 0, 1, ..., then negative ones
    (position n_pad/2 of an even length is read as -n_pad/2; the kernels are even)."""
    idx = np.arange(n_pad)
    return np.where(idx <= (n_pad - 1) // 2, idx, idx - n_pad).astype(np.float64)


def _spatial_ramp_kernel(m: np.ndarray, tau: float) -> np.ndarray:
    """Kak & Slaney ch. 3 eq. (61): h(0) = 1/(4 tau^2), h(m) = 0 for even m, -1/(m^2 pi^2 tau^2) for odd m (1/mm^2)."""
    m = np.asarray(m, dtype=np.float64)
    h = np.zeros_like(m)
    h[m == 0] = 1.0 / (4.0 * tau * tau)
    odd = np.abs(np.remainder(m, 2.0)) == 1.0
    h[odd] = -1.0 / (m[odd] ** 2 * math.pi**2 * tau * tau)
    return h


def _window(name: str, nu: np.ndarray) -> np.ndarray:
    """Window W(nu) at normalised frequencies nu = f / (cutoff * f_Nyquist) in [0, 1]."""
    if name == "ram-lak":
        return np.ones_like(nu)
    if name == "shepp-logan":
        return np.sinc(nu / 2.0)  # sin(pi nu / 2) / (pi nu / 2)
    if name == "cosine":
        return np.cos(math.pi * nu / 2.0)
    if name == "hamming":
        return 0.54 + 0.46 * np.cos(math.pi * nu)
    if name == "hann":
        return 0.5 + 0.5 * np.cos(math.pi * nu)  # = cos^2(pi nu / 2)
    raise AssertionError(name)


def _frequency_response(
    n_pad: int, tau: float, window: str, cutoff: float, spatial_ramp: bool, arc_radius: float | None
) -> np.ndarray:
    """(n_pad // 2 + 1,) float64 response H_k (1/mm) for the rfft bins f_k = k / (n_pad tau) cycles/mm."""
    k = np.arange(n_pad // 2 + 1, dtype=np.float64)
    freq = k / (n_pad * tau)
    if spatial_ramp:
        # DFT of the circularly placed spatial kernel (an even sequence, so the DFT is real), times tau:
        # the discrete convolution tau * sum_k h[i - k] p[k] in the frequency domain.
        ramp = tau * np.fft.rfft(_spatial_ramp_kernel(_signed_indices(n_pad), tau)).real
    else:
        ramp = np.abs(freq)  # the continuous ramp |f| sampled at the bins (H_0 = 0)
    nu = 2.0 * k / (n_pad * cutoff)  # f / (cutoff * f_Nyquist), f_Nyquist = 1 / (2 tau)
    response = np.where(nu <= 1.0 + 1e-12, ramp * _window(window, np.minimum(nu, 1.0)), 0.0)
    if arc_radius is not None:
        # Equiangular (curved) detector: the kernel of the fan angle, (gamma / sin gamma)^2 h(gamma)
        # (Kak & Slaney ch. 3, sec. 3.4.1), expressed per mm of arc: gamma_m = m tau / R.
        m = _signed_indices(n_pad)
        gamma = m * tau / arc_radius
        factor = np.ones_like(gamma)
        nz = gamma != 0
        factor[nz] = (gamma[nz] / np.sin(gamma[nz])) ** 2
        kernel = np.fft.irfft(response, n=n_pad) * factor
        response = np.fft.rfft(kernel).real
    return response


# --- validation ------------------------------------------------------------------------------------


def _detector_size(det_count) -> tuple[int, tuple[int, ...]]:
    """(n_cols, trailing shape the data must have): an int (cols) or a pair det_shape (rows, cols)."""
    if isinstance(det_count, numbers.Integral) and not isinstance(det_count, bool):
        n = _positive_int(det_count, "det_count")
        return n, (n,)
    try:
        if isinstance(det_count, (str, bytes)):
            raise TypeError
        dims = tuple(det_count)
    except TypeError:
        raise TypeError(
            f"det_count must be a positive integer (detector columns) or a pair det_shape (n_rows, n_cols), got {det_count!r}"
        ) from None
    if len(dims) != 2:
        raise ValueError(f"det_count given as det_shape must have 2 entries (n_rows, n_cols), got {len(dims)}")
    rows, cols = (_positive_int(n, f"det_shape[{k}]") for k, n in enumerate(dims))
    return cols, (rows, cols)


def _column_spacing(det_spacing) -> float:
    """A scalar, or a pair (dv, du) as in 3D geometries, of which the column spacing du is used."""
    if isinstance(det_spacing, numbers.Real) and not isinstance(det_spacing, bool):
        return _positive_length(det_spacing, "det_spacing")
    try:
        if isinstance(det_spacing, (str, bytes)):
            raise TypeError
        pair = tuple(det_spacing)
    except TypeError:
        raise TypeError(f"det_spacing must be a positive number or a pair (dv, du), got {det_spacing!r}") from None
    if len(pair) != 2:
        raise ValueError(f"det_spacing must be a number or a pair (dv, du), got {len(pair)} entries")
    _positive_length(pair[0], "det_spacing[0]")
    return _positive_length(pair[1], "det_spacing[1]")




class _KeepsFloat64(nn.Module):
    """Module casts (``.float()``, ``.half()``, ``.to(dtype)``) move the analytic float64 buffers
    listed in ``_FLOAT64_BUFFERS`` to another device but never round them; the forward casts them to
    the data's dtype. Parameters (the learnable case) follow casts as usual."""

    _FLOAT64_BUFFERS: tuple[str, ...] = ()

    def _apply(self, fn, recurse=True):
        kept = {}
        for name in self._FLOAT64_BUFFERS:
            value = self._buffers.get(name)
            if value is not None:
                kept[name] = value
        super()._apply(fn, recurse)
        for name, value in kept.items():
            self._buffers[name] = value.to(self._buffers[name].device)
        return self


# --- the module ------------------------------------------------------------------------------------


class RampFilter(_KeepsFloat64):
    """Ramp filter along the last axis (detector columns) of ``(..., n_views, det_count)`` or
    ``(..., n_views, n_rows, n_cols)`` projections, by rfft / irfft.

    ``q = RampFilter(det_count, det_spacing)(p)`` computes the discrete convolution
    ``q[i] = tau * sum_k h[i - k] p[k]`` (``tau = det_spacing`` in mm) of each detector row with
    the ramp kernel ``h`` (1/mm^2), windowed in frequency; ``p`` in value x mm gives ``q`` in the
    image's value units per radian, so that parallel-beam FBP is
    ``f(x, y) = (pi / n_views) * sum_views q_view(x cos t + y sin t)`` over a half turn
    (docs/filters_and_weights.md gives the fan- and cone-beam formulas).

    Args:
        det_count: detector columns ``n`` (int), or ``det_shape = (n_rows, n_cols)``: then inputs
            must end in ``(n_rows, n_cols)``. Only the columns are filtered.
        det_spacing: bin spacing ``tau`` in mm (a pair ``(dv, du)`` uses ``du``). For a curved
            detector: the arc length of a bin.
        window: ``"ram-lak"`` (none), ``"shepp-logan"`` (``sinc(nu/2)``), ``"cosine"``
            (``cos(pi nu/2)``), ``"hamming"`` (``0.54 + 0.46 cos(pi nu)``) or ``"hann"``
            (``0.5 + 0.5 cos(pi nu)``), with ``nu = f / (cutoff * f_N)``, ``f_N = 1/(2 tau)``.
        cutoff: in (0, 1]: the window is stretched over ``[0, cutoff * f_N]`` and the response is
            zero above it (ODL's ``frequency_scaling``).
        padding: ``True``: zero-pad each row to the smallest length ``>= 2n - 1`` with prime
            factors 2, 3, 5, so the circular convolution of the FFT equals the linear one;
            ``False``: no padding (circular convolution, wrap-around); an int ``>= n``: that length.
        spatial_ramp: ``True`` (default): the response is the DFT of Kak & Slaney's spatial kernel
            ``h(0) = 1/(4 tau^2)``, ``h(m) = 0`` (m even), ``-1/(m^2 pi^2 tau^2)`` (m odd), placed
            circularly on the padded length; its DC value is right (no offset, no cupping).
            ``False``: the continuous ramp ``|f|`` sampled at the rfft bins (zero DC).
        learnable: ``False``: the response is a frozen float64 buffer; ``True``: an
            ``nn.Parameter`` (float64) initialised to it.
        arc_radius: for a curved (equiangular) detector of radius ``R`` mm (source to detector):
            the kernel is multiplied by ``(gamma_m / sin gamma_m)^2``, ``gamma_m = m tau / R``, the
            exact fan-beam kernel (Kak & Slaney sec. 3.4.1). ``None``: flat detector / parallel beam.

    Attributes:
        response: ``(n_pad // 2 + 1,)`` real frequency response ``H_k`` (1/mm) at
            ``frequencies`` ``f_k = k / (n_pad tau)`` (cycles/mm); ``H_k ~ |f_k| W(nu_k)``.
        n_pad: padded length.
    """

    _FLOAT64_BUFFERS = ("response", "frequencies")

    def __init__(
        self,
        det_count,
        det_spacing=1.0,
        window: str = "ram-lak",
        cutoff: float = 1.0,
        padding=True,
        spatial_ramp: bool = True,
        learnable: bool = False,
        arc_radius: float | None = None,
    ):
        super().__init__()
        n, trailing = _detector_size(det_count)
        tau = _column_spacing(det_spacing)
        if not isinstance(window, str):
            raise TypeError(f"window must be a string, one of {WINDOWS}, got {window!r}")
        if window.lower() not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
        window = window.lower()
        if isinstance(cutoff, bool) or not isinstance(cutoff, numbers.Real):
            raise TypeError(f"cutoff must be a real number in (0, 1], got {cutoff!r}")
        cutoff = float(cutoff)
        if not (0.0 < cutoff <= 1.0):
            raise ValueError(f"cutoff must be in (0, 1] (a fraction of the Nyquist frequency), got {cutoff}")
        if isinstance(padding, bool):
            n_pad = 2 * n - 1 if padding else n  # (a fast length >= 2 n - 1 below, once the size is checked)
        elif isinstance(padding, numbers.Integral):
            if padding < n:
                raise ValueError(f"padding must be True, False or an int >= det_count ({n}), got {padding}")
            n_pad = int(padding)
        else:
            raise TypeError(f"padding must be True, False or an int >= det_count, got {padding!r}")
        # The response is computed in float64 numpy with a few arrays of n_pad values alive at once.
        check_fits(
            nbytes(_RESPONSE_ARRAYS, n_pad, dtype=8),
            f"RampFilter: the frequency response of {n_pad} padded bins (det_count {n}, padding {padding!r})",
            "use a smaller det_count or padding",
        )
        if padding is True:
            n_pad = _fast_length(n_pad)
        if not isinstance(spatial_ramp, bool):
            raise TypeError(f"spatial_ramp must be True or False, got {spatial_ramp!r}")
        if not isinstance(learnable, bool):
            raise TypeError(f"learnable must be True or False, got {learnable!r}")
        if arc_radius is not None:
            arc_radius = _positive_length(arc_radius, "arc_radius")
            half_span = (n_pad // 2) * tau / arc_radius
            if half_span >= math.pi:
                raise ValueError(
                    f"arc_radius: the padded detector ({n_pad} bins of {tau:g} mm) spans {2 * half_span:.4g} rad on a "
                    f"circle of radius {arc_radius:g} mm; it must span less than 2 pi"
                )
        self.det_count = n
        self._trailing = trailing
        self.det_spacing = tau
        self.window = window
        self.cutoff = cutoff
        self.n_pad = n_pad
        self.spatial_ramp = spatial_ramp
        self.arc_radius = arc_radius
        self.learnable = learnable
        response = torch.from_numpy(_frequency_response(n_pad, tau, window, cutoff, spatial_ramp, arc_radius))
        freqs = torch.arange(n_pad // 2 + 1, dtype=torch.float64) / (n_pad * tau)
        self.register_buffer("frequencies", freqs, persistent=False)
        if learnable:
            self.response = nn.Parameter(response)
        else:
            self.register_buffer("response", response, persistent=False)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        """Filtered projections, same shape and dtype as ``p``."""
        p = floating_input(p, "p")
        k = len(self._trailing)
        if p.dim() < k or tuple(p.shape[-k:]) != self._trailing:
            what = "(..., n_views, n_rows, n_cols)" if k == 2 else "(..., n_views, det_count) or (..., n_rows, n_cols)"
            raise ValueError(
                f"p must have shape (..., {', '.join(map(str, self._trailing))}) {what}, got {tuple(p.shape)}"
            )
        if p.device != self.response.device:
            raise ValueError(
                f"p is on {p.device} but the filter is on {self.response.device}; move it with .to({str(p.device)!r})"
            )
        if not torch.compiler.is_compiling():
            rows = p.numel() // self.det_count if self.det_count else 0
            # the padded spectrum (complex), its product with the response, and the output
            check_fits(
                nbytes(rows, 2 * (self.n_pad // 2 + 1) * 2 + self.det_count, dtype=p.element_size()),
                f"RampFilter: filtering {rows} detector rows of {self.det_count} bins padded to {self.n_pad}",
                "filter a smaller batch at a time",
                p.device,
            )
        spectrum = torch.fft.rfft(p, n=self.n_pad, dim=-1)
        filtered = torch.fft.irfft(spectrum * self.response.to(p.dtype), n=self.n_pad, dim=-1)
        return filtered[..., : self.det_count]

    def extra_repr(self) -> str:
        arc = f", arc_radius={self.arc_radius:g}" if self.arc_radius is not None else ""
        return (
            f"det_count={self.det_count}, det_spacing={self.det_spacing:g} mm, window={self.window!r}, "
            f"cutoff={self.cutoff:g}, n_pad={self.n_pad}, spatial_ramp={self.spatial_ramp}{arc}, learnable={self.learnable}"
        )
