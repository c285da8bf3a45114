"""RampFilter: responses against their formulas, padding, the DC term, physical scaling, learnable
filters, gradients, dtypes/devices and bad input (docs/filters_and_weights.md)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import known_ops as ko

WINDOWS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")


def ks_kernel(m, tau):
    """Kak & Slaney ch. 3 eq. (61), written out independently of known_ops."""
    m = int(m)
    if m == 0:
        return 1.0 / (4 * tau * tau)
    if m % 2 == 0:
        return 0.0
    return -1.0 / (m * m * math.pi**2 * tau * tau)


def window_formula(name, nu):
    return {
        "ram-lak": np.ones_like(nu),
        "shepp-logan": np.where(nu == 0, 1.0, np.sin(math.pi * nu / 2) / np.where(nu == 0, 1.0, math.pi * nu / 2)),
        "cosine": np.cos(math.pi * nu / 2),
        "hamming": 0.54 + 0.46 * np.cos(math.pi * nu),
        "hann": np.cos(math.pi * nu / 2) ** 2,
    }[name]


def filter_np(filt, p):
    return filt(torch.as_tensor(p, dtype=torch.float64)).numpy()


# --- responses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("cutoff", [1.0, 0.6])
def test_sampled_ramp_response_is_abs_f_times_window(window, cutoff):
    n, tau = 25, 0.8
    filt = ko.RampFilter(n, tau, window=window, cutoff=cutoff, spatial_ramp=False)
    n_pad = filt.n_pad
    assert n_pad >= 2 * n - 1
    f = np.arange(n_pad // 2 + 1) / (n_pad * tau)
    nu = f / (cutoff / (2 * tau))
    expected = np.where(nu <= 1 + 1e-12, f * window_formula(window, np.minimum(nu, 1.0)), 0.0)
    np.testing.assert_allclose(filt.response.numpy(), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(filt.frequencies.numpy(), f, rtol=1e-15)
    if cutoff < 1:
        assert np.all(filt.response.numpy()[nu > 1 + 1e-12] == 0) and np.any(nu > 1)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("n_pad", [30, 31])
def test_spatial_ramp_response_is_the_dft_of_the_kak_slaney_kernel(window, n_pad):
    n, tau, cutoff = 12, 1.3, 0.8
    filt = ko.RampFilter(n, tau, window=window, cutoff=cutoff, padding=n_pad)
    assert filt.n_pad == n_pad
    m = np.array([j if j <= (n_pad - 1) // 2 else j - n_pad for j in range(n_pad)])
    h = np.array([ks_kernel(j, tau) for j in m])
    k = np.arange(n_pad // 2 + 1)
    dft = np.array([np.sum(h * np.cos(2 * math.pi * kk * np.arange(n_pad) / n_pad)) for kk in k]) * tau
    nu = 2 * k / (n_pad * cutoff)
    expected = np.where(nu <= 1 + 1e-12, dft * window_formula(window, np.minimum(nu, 1.0)), 0.0)
    np.testing.assert_allclose(filt.response.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_spatial_ramp_dc_value_against_the_sampled_ramp():
    """The sampled |f| has a zero DC bin; the spatial kernel's DC bin is tau * sum_m h(m), the known
    1/(4 tau) - (2 / (pi^2 tau)) sum_{odd m < N/2} 1/m^2 (+ the term m = -N/2 when N/2 is odd), > 0."""
    tau = 0.7
    for n_pad in (64, 100, 90):
        spatial = ko.RampFilter(20, tau, padding=n_pad).response.numpy()
        sampled = ko.RampFilter(20, tau, padding=n_pad, spatial_ramp=False).response.numpy()
        odd = np.arange(1, n_pad // 2, 2, dtype=np.float64)
        known = 1 / (4 * tau) - 2 / (math.pi**2 * tau) * np.sum(1 / odd**2)
        if n_pad % 2 == 0 and (n_pad // 2) % 2 == 1:
            known -= 1 / (math.pi**2 * tau * (n_pad // 2) ** 2)
        assert spatial[0] == pytest.approx(known, rel=1e-12)
        assert spatial[0] > 0 and sampled[0] == 0
        # Away from DC the two agree closely (both approximate |f|).
        f = np.arange(len(spatial)) / (n_pad * tau)
        mid = slice(len(spatial) // 4, 3 * len(spatial) // 4)
        np.testing.assert_allclose(spatial[mid], f[mid], rtol=0.05)


def test_constant_row_gives_the_kernel_sums():
    """Filtering a constant row of ones gives tau * sum_k h(i - k): the spatial ramp's partial sums."""
    n, tau = 33, 0.5
    q = filter_np(ko.RampFilter(n, tau), np.ones((3, n)))
    expected = np.array([tau * sum(ks_kernel(i - k, tau) for k in range(n)) for i in range(n)])
    np.testing.assert_allclose(q, np.broadcast_to(expected, q.shape), rtol=1e-11, atol=1e-13)
    # Closed form at the centre: (1/tau) (1/4 - (2/pi^2) sum_{odd m <= (n-1)/2} 1/m^2), small and positive.
    odd = np.arange(1, (n - 1) // 2 + 1, 2, dtype=np.float64)
    centre = (1 / tau) * (0.25 - 2 / math.pi**2 * np.sum(1 / odd**2))
    assert q[0, n // 2] == pytest.approx(centre, rel=1e-11)
    assert 0 < centre < 0.05 / tau


# --- padding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("position", [0, 1, 18, 19])
def test_padding_gives_the_linear_convolution(position):
    """An impulse near an edge: with padding the output is the kernel itself, tau * h(i - position)
    (a direct linear convolution); without padding the kernel wraps around."""
    n, tau = 20, 1.1
    p = np.zeros(n)
    p[position] = 1.0
    expected = np.array([tau * ks_kernel(i - position, tau) for i in range(n)])
    np.testing.assert_allclose(filter_np(ko.RampFilter(n, tau), p), expected, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(filter_np(ko.RampFilter(n, tau, padding=2 * n - 1), p), expected, rtol=1e-11, atol=1e-13)
    wrapped = filter_np(ko.RampFilter(n, tau, padding=False), p)
    assert np.max(np.abs(wrapped - expected)) > 1e-3 / tau


def test_padded_length_is_a_fast_size():
    for n in (1, 2, 7, 100, 367, 513):
        n_pad = ko.RampFilter(n).n_pad
        assert n_pad >= 2 * n - 1
        k = n_pad
        for prime in (2, 3, 5):
            while k % prime == 0:
                k //= prime
        assert k == 1
    assert ko.RampFilter(10, padding=False).n_pad == 10


# --- physical scaling ---------------------------------------------------------------------------


def _disc_fbp(filt, tau, n, radii, n_views=360):
    s = (np.arange(n) - (n - 1) / 2) * tau
    a = 40.0
    p = 2 * np.sqrt(np.clip(a * a - s * s, 0, None))  # projection of a unit disc of radius a (every view)
    q = filter_np(filt, p[None])[0]
    theta = np.arange(n_views) * math.pi / n_views
    return np.array([math.pi / n_views * np.sum(np.interp(r * np.cos(theta), s, q)) for r in radii])


def test_parallel_fbp_scaling_recovers_the_disc_value():
    """f(x) = (pi / n_views) sum_views q(x cos t + y sin t) recovers a unit disc (Kak & Slaney ch. 3)."""
    n, tau = 241, 0.5
    f = _disc_fbp(ko.RampFilter(n, tau), tau, n, [0.0, 15.0, 30.0, 50.0])
    np.testing.assert_allclose(f[:3], 1.0, atol=2e-3)
    assert abs(f[3]) < 2e-3
    # The sampled |f| (zero DC bin) gives the classical offset of a few percent.
    g = _disc_fbp(ko.RampFilter(n, tau, spatial_ramp=False), tau, n, [0.0, 15.0, 50.0])
    assert np.all(np.abs(g - [1, 1, 0]) > 0.01)


def test_curved_kernel_is_modulated_by_gamma_over_sin_gamma():
    n, tau, radius = 15, 2.0, 40.0
    filt = ko.RampFilter(n, tau, arc_radius=radius)
    p = np.zeros(n)
    p[4] = 1.0
    expected = []
    for i in range(n):
        g = (i - 4) * tau / radius
        expected.append(tau * ks_kernel(i - 4, tau) * (1.0 if g == 0 else (g / math.sin(g)) ** 2))
    np.testing.assert_allclose(filter_np(filt, p), expected, rtol=1e-10, atol=1e-13)


# --- learnable, gradients, shapes, dtypes, devices ---------------------------------------------------


def test_learnable_filter_starts_equal_and_receives_gradients():
    frozen = ko.RampFilter(16, 0.5, window="hann", cutoff=0.9)
    learn = ko.RampFilter(16, 0.5, window="hann", cutoff=0.9, learnable=True)
    assert list(frozen.parameters()) == []
    params = list(learn.parameters())
    assert len(params) == 1 and params[0] is learn.response and params[0].requires_grad
    assert torch.equal(learn.response.detach(), frozen.response)
    y = torch.randn(2, 5, 16, dtype=torch.float64)
    assert torch.equal(learn(y), frozen(y))
    learn(y).square().sum().backward()
    assert learn.response.grad is not None and learn.response.grad.abs().max() > 0
    # float32 data: the float64 parameter is cast in the forward and still gets its gradient.
    learn.response.grad = None
    learn(y.float()).sum().backward()
    assert learn.response.grad.dtype == torch.float64


def test_gradcheck_and_gradgradcheck():
    y = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    filt = ko.RampFilter(6, 0.9, window="shepp-logan")
    assert torch.autograd.gradcheck(filt, (y,))
    assert torch.autograd.gradgradcheck(filt, (y,), fast_mode=True)
    learn = ko.RampFilter(6, 0.9, window="cosine", learnable=True, arc_radius=30.0)

    def apply(response, x):
        return torch.func.functional_call(learn, {"response": response}, (x,))

    assert torch.autograd.gradcheck(apply, (learn.response.detach().clone().requires_grad_(), y))


def test_shapes_dtypes_and_non_contiguous():
    filt = ko.RampFilter((4, 9), (2.0, 0.5), window="hamming")
    y = torch.randn(2, 3, 5, 4, 9, dtype=torch.float64)
    q = filt(y)
    assert q.shape == y.shape and q.dtype == torch.float64
    # Each detector row is filtered separately, like a 2D filter with the column spacing.
    ref = ko.RampFilter(9, 0.5, window="hamming")(y.reshape(-1, 9)).reshape(y.shape)
    torch.testing.assert_close(q, ref, rtol=0, atol=0)
    q32 = filt(y.float())
    assert q32.dtype == torch.float32
    torch.testing.assert_close(q32.double(), q, rtol=1e-5, atol=1e-5 * q.abs().max().item())
    yt = torch.randn(9, 5, dtype=torch.float64).T  # non-contiguous (5, 9)
    torch.testing.assert_close(ko.RampFilter(9, 0.5)(yt), ko.RampFilter(9, 0.5)(yt.contiguous()))
    # An int det_count filters any (..., det_count) tensor, e.g. (views, rows, cols) data.
    assert ko.RampFilter(9)(torch.zeros(3, 4, 9)).shape == (3, 4, 9)


def test_module_casts_keep_the_float64_response():
    filt = ko.RampFilter(8, 1.0).float()
    assert filt.response.dtype == torch.float64 and filt.frequencies.dtype == torch.float64
    assert filt.to(torch.float16).response.dtype == torch.float64


def test_deterministic():
    y = torch.randn(3, 50, 101)
    filt = ko.RampFilter(101, 0.3, window="hann")
    assert torch.equal(filt(y), filt(y))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.cuda
def test_cuda_matches_cpu():
    y = torch.randn(2, 30, 65)
    for learnable in (False, True):
        filt = ko.RampFilter(65, 0.7, window="shepp-logan", learnable=learnable)
        ref = filt(y)
        out = filt.to("cuda")(y.cuda()).cpu()
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(window="ramlak"), ValueError, "window must be one of"),
        (dict(window=3), TypeError, "window must be a string"),
        (dict(cutoff=0.0), ValueError, r"cutoff must be in \(0, 1\]"),
        (dict(cutoff=1.5), ValueError, r"cutoff must be in \(0, 1\]"),
        (dict(cutoff=-0.2), ValueError, r"cutoff must be in \(0, 1\]"),
        (dict(cutoff="1"), TypeError, "cutoff must be a real number"),
        (dict(padding=5), ValueError, "padding must be True, False or an int >= det_count"),
        (dict(padding=3.5), TypeError, "padding must be"),
        (dict(det_spacing=0.0), ValueError, "det_spacing must be positive"),
        (dict(det_spacing="a"), TypeError, "det_spacing must be a positive number"),
        (dict(det_spacing=(1.0, -1.0)), ValueError, r"det_spacing\[1\] must be positive"),
        (dict(spatial_ramp=1), TypeError, "spatial_ramp must be True or False"),
        (dict(learnable="yes"), TypeError, "learnable must be True or False"),
        (dict(arc_radius=-3.0), ValueError, "arc_radius must be positive"),
        (dict(arc_radius=2.0), ValueError, "arc_radius: the padded detector"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = dict(det_count=10, det_spacing=1.0)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        ko.RampFilter(**args)


@pytest.mark.parametrize(
    "det_count, error",
    [(0, ValueError), (2.5, TypeError), ((3, 0), ValueError), ((1, 2, 3), ValueError), ("x", TypeError)],
)
def test_bad_det_count(det_count, error):
    with pytest.raises(error, match="det_"):
        ko.RampFilter(det_count)


def test_bad_data():
    filt = ko.RampFilter(10)
    with pytest.raises(ValueError, match=r"p must have shape \(\.\.\., 10\)"):
        filt(torch.zeros(3, 11))
    with pytest.raises(ValueError, match=r"p must have shape \(\.\.\., 10\)"):
        filt(torch.zeros(()))
    with pytest.raises(TypeError, match="p must be float32 or float64"):
        filt(torch.zeros(3, 10, dtype=torch.int64))
    with pytest.raises(TypeError, match="p must be float32 or float64"):
        filt(torch.zeros(3, 10, dtype=torch.complex64))
    with pytest.raises(TypeError, match="p must be a torch.Tensor"):
        filt(np.zeros((3, 10)))
    with pytest.raises(ValueError, match=r"p must have shape \(\.\.\., 4, 10\)"):
        ko.RampFilter((4, 10))(torch.zeros(2, 5, 10))
    with pytest.raises(ValueError, match="p is on meta but the filter is on cpu"):
        filt(torch.zeros(3, 10, device="meta"))
