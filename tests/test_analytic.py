"""Analytic agreement: Joseph forward projections of the rasterised Shepp-Logan phantom vs its exact line integrals.

Error model (the justification of every bound below)
---------------------------------------------------
Both sides describe the same physical object, but ``A x`` projects a pixelised
image: ``shepp_logan`` replaces the piecewise-constant phantom by pixel means
(exact except in the band of pixels cut by an edge), and Joseph's method
interpolates linearly between pixel centres, which smears each edge over about
one pixel. A ray crossing an edge of contrast ``drho`` therefore picks up an
error of order ``h * drho`` (``h`` the pixel size), while the projections
themselves are of order ``R * rho`` (``R`` the phantom's size, the ``scale`` in
mm per table unit). The relative L2 error is thus first order,
``C * h / R``: measured here (modified phantom, supersample 4)

    parallel, 256^2 at 1 mm (h/R = 1/128), issue example:   1.38 %  -> C = 1.77
    parallel, detector offset, 256^2 / 128^2 (h/R = 1/64):   1.31 % / 2.66 %  (halving h halves the error)
    flat / curved fan, detector offset, 256^2 / 128^2:       1.33 % / 2.67 %  -> C = 1.70-1.71
    anisotropic 1.25 x 1 mm, offset, R = 100 (h/R = 1/80):   1.87-1.90 % (h the larger spacing) -> C = 1.52
    from_vectors trajectories; float32 image:               1.37 %; 1.31 %
    original (low-contrast) phantom:                        0.51 %

so every test asserts ``relative error <= 2.5 * h / R``: the largest measured
``C`` (1.77) plus a margin of about 40 %. Geometry errors exceed it clearly:
measured at 256^2, a row-flipped image gives 24 %, a detector offset of the
wrong sign 31 %, a half-pixel detector shift 4.0 % (twice the 1.95 % bound).
"""
import math

import numpy as np
import pytest
import torch

import known_ops as ko
import phantoms

ERROR_CONSTANT = 2.5  # bound: relative L2 error <= ERROR_CONSTANT * h / R (see the module docstring)


def _relative_error(volume, geometry, scale=None, modified=True, dtype=torch.float64):
    if scale is None:
        scale = phantoms.phantom_scale(volume)
    image = phantoms.shepp_logan(volume, modified=modified, dtype=dtype, scale=scale)
    projected = ko.RayTransform(volume, geometry)(image).double()
    exact = phantoms.shepp_logan_projections(geometry, modified=modified, scale=scale)
    return (torch.linalg.vector_norm(projected - exact) / torch.linalg.vector_norm(exact)).item()


def _bound(volume, scale=None):
    scale = phantoms.phantom_scale(volume) if scale is None else scale
    return ERROR_CONSTANT * max(volume.spacing) / scale


def _parallel():
    return ko.ParallelBeam2D(ko.uniform_angles(180, math.pi), det_count=367, det_spacing=1.0, det_offset=3.7)


def _fan(detector):
    return ko.FanBeam2D(
        ko.uniform_angles(360, 2 * math.pi), source_distance=500.0, detector_distance=500.0, det_count=500,
        det_spacing=1.0, det_offset=-12.3, detector=detector,
    )


@pytest.mark.parametrize("name", ["parallel", "fan-flat", "fan-curved"])
def test_forward_projection_matches_exact_line_integrals(name):
    geometry = {"parallel": _parallel, "fan-flat": lambda: _fan("flat"), "fan-curved": lambda: _fan("curved")}[name]()
    volume = ko.Volume((256, 256), spacing=1.0)  # phantom radius R = 128 mm, h / R = 1/128
    error = _relative_error(volume, geometry)
    assert error <= _bound(volume), f"{name}: relative L2 error {error:.4%} > {_bound(volume):.4%}"


def test_issue_example_default_scale():
    # The issue's snippet: shepp_logan(vol) and shepp_logan_projections(geo) with no scale describe the same object.
    volume = ko.Volume(shape=(256, 256), spacing=1.0)
    geometry = ko.ParallelBeam2D(angles=ko.uniform_angles(180, math.pi), det_count=367, det_spacing=1.0)
    y = ko.RayTransform(volume, geometry)(phantoms.shepp_logan(volume))
    y_exact = phantoms.shepp_logan_projections(geometry)
    error = (torch.linalg.vector_norm(y.double() - y_exact) / torch.linalg.vector_norm(y_exact)).item()
    assert error <= _bound(volume)


def test_error_is_first_order_in_the_pixel_size():
    # The same physical object (256 mm field, R = 128 mm) at 2 mm and at 1 mm pixels: the error must halve.
    geometry = _parallel()
    coarse = _relative_error(ko.Volume((128, 128), spacing=2.0), geometry)
    fine = _relative_error(ko.Volume((256, 256), spacing=1.0), geometry)
    assert coarse <= _bound(ko.Volume((128, 128), spacing=2.0))
    assert fine < 0.6 * coarse, f"error did not decrease as h: {coarse:.4%} at 2 mm, {fine:.4%} at 1 mm"


@pytest.mark.parametrize("detector", ["parallel", "curved"])
def test_anisotropic_offset_volume(detector):
    # Pixels 1.25 mm (y) x 1 mm (x), grid shifted by (10, -5) mm; an explicit R = 100 mm keeps the
    # object inside the grid (y in [-115, 135], x in [-133, 123] mm; the skull reaches |y| <= 92, |x| <= 69).
    volume = ko.Volume((200, 256), spacing=(1.25, 1.0), offset=(10.0, -5.0))
    geometry = _parallel() if detector == "parallel" else _fan("curved")
    error = _relative_error(volume, geometry, scale=100.0)
    assert error <= _bound(volume, 100.0), f"relative L2 error {error:.4%} > {_bound(volume, 100.0):.4%}"


def test_trajectories_from_vectors():
    # Source and detector distances that vary per view, a detector offset and a tilted detector line.
    volume = ko.Volume((256, 256))
    t = ko.uniform_angles(200, 2 * math.pi)
    radial, tangent = np.stack([np.sin(t), -np.cos(t)], 1), np.stack([np.cos(t), np.sin(t)], 1)
    source = (450 + 60 * np.sin(3 * t))[:, None] * radial
    centre = -(350 + 40 * np.cos(2 * t))[:, None] * radial + 7.0 * tangent
    step = 1.6 * np.stack([np.cos(t + 0.1), np.sin(t + 0.1)], 1)
    fan = ko.FanBeam2D.from_vectors(np.concatenate([source, centre, step], 1), det_count=400)
    parallel_step = 1.1 * np.stack([np.cos(t + 0.2), np.sin(t + 0.2)], 1)
    parallel = ko.ParallelBeam2D.from_vectors(np.concatenate([2.0 * radial, 5.0 * tangent, parallel_step], 1), 360)
    for geometry in (fan, parallel):
        error = _relative_error(volume, geometry)
        assert error <= _bound(volume), f"{geometry}: relative L2 error {error:.4%}"


def test_float32_and_original_phantom():
    volume = ko.Volume((256, 256))
    assert _relative_error(volume, _parallel(), dtype=torch.float32) <= _bound(volume)
    assert _relative_error(volume, _parallel(), modified=False) <= _bound(volume)


def test_a_geometry_error_is_detected():
    # Sanity check of the test's power: a half-pixel detector shift (measured 4.0 %) exceeds twice the bound.
    volume = ko.Volume((256, 256))
    image = phantoms.shepp_logan(volume, dtype=torch.float64)
    projected = ko.RayTransform(volume, _parallel())(image)
    shifted = ko.ParallelBeam2D(ko.uniform_angles(180, math.pi), det_count=367, det_spacing=1.0, det_offset=3.7 + 0.5)
    exact = phantoms.shepp_logan_projections(shifted)
    error = (torch.linalg.vector_norm(projected - exact) / torch.linalg.vector_norm(exact)).item()
    assert error > 2 * _bound(volume)
    flipped = ko.RayTransform(volume, _parallel())(torch.flip(image, [0]))  # rows in the wrong order
    exact = phantoms.shepp_logan_projections(_parallel())
    assert (torch.linalg.vector_norm(flipped - exact) / torch.linalg.vector_norm(exact)).item() > 10 * _bound(volume)
