"""known_ops.interop.astra: ASTRA's geometry dictionaries in both directions, and its array conventions
(skipped when astra-toolbox is missing). The 2D projector cross-checks of the conversions are in
tests/test_astra.py (which uses the same helpers); here: round trips of every geometry type ASTRA
defines that we read, ASTRA's own geom_2vec for the circular types, window-defined volumes, and 3D
data layouts accepted by ASTRA's data3d."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import known_ops as ko
from conftest import relative_error

astra = pytest.importorskip("astra", reason="astra-toolbox is not installed: the ASTRA interoperability tests are skipped")
from known_ops.interop import astra as kastra  # noqa: E402

ANGLES = np.array([0.0, 0.1, 1.0, math.pi / 2, 4.0, 5.5])
rng = np.random.default_rng(7)
VEC2 = np.concatenate([rng.uniform(-1, 1, (6, 2)) + [[0.0, -3.0]], rng.uniform(-2, 2, (6, 2)),
                       rng.uniform(0.5, 1.0, (6, 2))], axis=1)
FAN_VEC = np.concatenate([rng.uniform(-5, 5, (6, 2)) + [[0.0, -150.0]], rng.uniform(-5, 5, (6, 2)) + [[0.0, 90.0]],
                          np.tile([[0.9, 0.1]], (6, 1))], axis=1)
CONE_VEC = np.concatenate([rng.uniform(-5, 5, (6, 3)) + [[0.0, -150.0, 0.0]], rng.uniform(-5, 5, (6, 3)) + [[0.0, 90.0, 0.0]],
                           np.tile([[0.9, 0.1, 0.0]], (6, 1)), np.tile([[0.0, 0.05, 1.1]], (6, 1))], axis=1)
PAR3_VEC = np.concatenate([np.tile([[0.1, -1.0, 0.05]], (6, 1)), rng.uniform(-2, 2, (6, 3)),
                           np.tile([[0.8, 0.0, 0.1]], (6, 1)), np.tile([[0.0, 0.1, 1.2]], (6, 1))], axis=1)

ASTRA_GEOMETRIES = {
    "parallel": lambda: astra.create_proj_geom("parallel", 1.3, 7, ANGLES),
    "fanflat": lambda: astra.create_proj_geom("fanflat", 1.3, 7, ANGLES, 150.0, 90.0),
    "parallel_vec": lambda: astra.create_proj_geom("parallel_vec", 7, VEC2),
    "fanflat_vec": lambda: astra.create_proj_geom("fanflat_vec", 7, FAN_VEC),
    "parallel3d": lambda: astra.create_proj_geom("parallel3d", 1.3, 0.7, 5, 7, ANGLES),
    "cone": lambda: astra.create_proj_geom("cone", 1.3, 0.7, 5, 7, ANGLES, 150.0, 90.0),
    "parallel3d_vec": lambda: astra.create_proj_geom("parallel3d_vec", 5, 7, PAR3_VEC),
    "cone_vec": lambda: astra.create_proj_geom("cone_vec", 5, 7, CONE_VEC),
}
OUR_TYPES = {"parallel": ko.ParallelBeam2D, "fanflat": ko.FanBeam2D, "parallel3d": ko.ParallelBeam3D, "cone": ko.ConeBeam3D}


@pytest.mark.parametrize("kind", list(ASTRA_GEOMETRIES))
def test_every_astra_geometry_type_round_trips(kind):
    proj_geom = ASTRA_GEOMETRIES[kind]()
    ours = kastra.geometry_from_astra(proj_geom)
    assert type(ours) is OUR_TYPES[kind.removesuffix("_vec")]
    # ASTRA's own conversion of its circular types gives our vectors (vector types: the vectors themselves)
    expected = proj_geom["Vectors"] if kind.endswith("_vec") else astra.geom_2vec(proj_geom)["Vectors"]
    np.testing.assert_allclose(ours.to_vectors(), expected, rtol=1e-12, atol=1e-12)
    if not kind.endswith("_vec"):
        np.testing.assert_array_equal(ours.angles, ANGLES)
    back = kastra.geometry_to_astra(ours)
    assert back["type"] == kind if kind.endswith("_vec") else back["type"] == kind + "_vec"
    np.testing.assert_array_equal(back["Vectors"], ours.to_vectors())
    if ours.ndim == 2:
        assert back["DetectorCount"] == 7
    else:
        assert (back["DetectorRowCount"], back["DetectorColCount"]) == (5, 7) == ours.det_shape
        assert astra.functions.geom_size(back) == (5, len(ANGLES), 7)
    assert kastra.geometry_from_astra(back) == type(ours).from_vectors(ours.to_vectors(), back.get("DetectorCount") or ours.det_shape)


@pytest.mark.parametrize("volume", [
    ko.Volume((12, 9), spacing=0.75, offset=(3.0, -2.0)),
    ko.Volume((12, 9), spacing=(0.5, 1.25)),
    ko.Volume((4, 12, 9), spacing=(2.0, 0.75, 0.5), offset=(1.0, 3.0, -2.0)),
], ids=["2d_offset", "2d_anisotropic", "3d"])
def test_volumes_round_trip_through_astras_windows(volume):
    vol_geom = kastra.volume_to_astra(volume)
    assert vol_geom["GridRowCount"] == volume.shape[-2] and vol_geom["GridColCount"] == volume.shape[-1]
    (ylo, yhi), (xlo, xhi) = volume.bounds[-2:]
    assert (vol_geom["option"]["WindowMinX"], vol_geom["option"]["WindowMaxY"]) == (xlo, yhi)
    back = kastra.volume_from_astra(vol_geom)
    assert back.shape == volume.shape
    np.testing.assert_allclose(back.spacing, volume.spacing, rtol=1e-14)
    np.testing.assert_allclose(back.offset, volume.offset, rtol=0, atol=1e-14)


def test_astras_default_window_is_unit_pixels_about_the_origin():
    assert kastra.volume_from_astra(astra.create_vol_geom(6, 10)) == ko.Volume((6, 10))
    assert kastra.volume_from_astra(astra.create_vol_geom(6, 10, 3)) == ko.Volume((3, 6, 10))


def test_from_astra_reproduces_astras_linear_projector_on_a_window_defined_volume():
    """ASTRA's own setup read by from_astra (off-centre window, circular geometry): our operator = ASTRA's `linear`."""
    vol_geom = astra.create_vol_geom(40, 56, -18.0, 24.0, -12.0, 18.0)  # 0.75 mm pixels, centre (3, 3)
    proj_geom = astra.create_proj_geom("parallel", 0.8, 80, np.linspace(0.05, math.pi, 30, endpoint=False))
    volume, geometry = kastra.from_astra(vol_geom, proj_geom)
    assert volume == ko.Volume((40, 56), spacing=0.75, offset=(3.0, 3.0))
    image = np.random.default_rng(0).random(volume.shape)
    projector = astra.create_projector("linear", proj_geom, vol_geom)
    try:
        sino_id, sino = astra.create_sino(kastra.image_to_astra(image, volume), projector)
        astra.data2d.delete(sino_id)
    finally:
        astra.projector.delete(projector)
    ours = ko.RayTransform(volume, geometry)(torch.from_numpy(image))
    assert relative_error(ours, sino) <= 2e-5


def test_image_flip_is_astras_row_order():
    volume = ko.Volume((4, 3))
    image = torch.arange(12.0).reshape(4, 3)
    flipped = kastra.image_to_astra(image, volume)
    assert torch.equal(flipped[0], image[3])  # ASTRA's row 0 is our last row (largest y)
    assert torch.equal(kastra.image_from_astra(flipped, volume), image)
    assert np.array_equal(kastra.image_to_astra(image.numpy()[None], volume)[0], np.flipud(image.numpy()))  # batch dims
    cube = ko.Volume((2, 4, 3))
    x = np.random.default_rng(1).random(cube.shape)
    assert kastra.image_to_astra(x, cube) is x  # 3D: no flip


def test_3d_layouts_are_what_astra_data3d_takes():
    volume = ko.Volume((3, 4, 5))
    geometry = ko.ConeBeam3D(ko.uniform_angles(6), 150.0, 90.0, (2, 7))
    vol_geom, proj_geom = kastra.to_astra(volume, geometry)
    y = np.random.default_rng(2).random(geometry.shape).astype(np.float32)
    ay = kastra.projections_to_astra(y, geometry)
    assert ay.shape == (2, 6, 7)
    sino_id = astra.data3d.create("-sino", proj_geom, ay)  # contiguous, as ASTRA needs
    try:
        np.testing.assert_array_equal(kastra.projections_from_astra(astra.data3d.get(sino_id), geometry), y)
    finally:
        astra.data3d.delete(sino_id)
    x = np.random.default_rng(3).random(volume.shape).astype(np.float32)
    vol_id = astra.data3d.create("-vol", vol_geom, kastra.image_to_astra(x, volume))
    try:
        np.testing.assert_array_equal(astra.data3d.get(vol_id), x)
    finally:
        astra.data3d.delete(vol_id)
    t = torch.from_numpy(y)
    assert torch.equal(kastra.projections_from_astra(kastra.projections_to_astra(t, geometry), geometry), t)


def test_bad_input_is_refused():
    volume = ko.Volume((4, 4))
    with pytest.raises(ValueError, match="curved"):
        kastra.geometry_to_astra(ko.FanBeam2D(ko.uniform_angles(4), 100.0, 50.0, 5, detector="curved"))
    with pytest.raises(ValueError, match="unsupported ASTRA geometry type 'sparse_matrix'"):
        kastra.geometry_from_astra({"type": "sparse_matrix"})
    with pytest.raises(ValueError, match="missing key"):
        kastra.geometry_from_astra({"type": "parallel", "DetectorCount": 3})
    with pytest.raises(TypeError, match="proj_geom"):
        kastra.geometry_from_astra("parallel")
    with pytest.raises(ValueError, match="3D"):
        kastra.from_astra(astra.create_vol_geom(4, 4), ASTRA_GEOMETRIES["cone"]())
    with pytest.raises(ValueError, match="image must have shape"):
        kastra.image_to_astra(np.zeros((4, 5)), volume)
    with pytest.raises(ValueError, match="projections must have shape"):
        kastra.projections_from_astra(np.zeros((6, 2, 7)), ko.ConeBeam3D(ko.uniform_angles(6), 150.0, 90.0, (2, 7)))
    with pytest.raises(ValueError, match="WindowMaxX"):
        kastra.volume_from_astra(astra.create_vol_geom(4, 4, 1.0, -1.0, 0.0, 1.0))
