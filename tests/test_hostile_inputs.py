"""A hostile-input sweep of the public API and the registered ops, each case run in a child process.

Every case calls a public constructor or call (or a raw ``torch.ops.known_ops`` op) with a hostile
value: NaN, inf, huge, tiny, negative, zero, empty, of the wrong type or shape, inconsistent
operands. A case either must raise a clear exception (``ValueError``, ``TypeError`` or
``RuntimeError`` with a message, optionally matching a pattern that names the parameter) or must
return (e.g. NaN data give NaN results: that is the right answer, not a crash); in both cases the
child must exit cleanly, never by a signal (a segfault) or a hang (a timeout). The cases run in
children, a group of them per child, so that a crash fails one test instead of taking down the test
run; the child announces each case before it runs it, so a crash or hang is attributed to its case,
and the cases after it are run again in a fresh child.

Run as a script (``python tests/test_hostile_inputs.py [group ...]``) it prints a table of the
outcomes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLEAN = ("ValueError", "TypeError", "RuntimeError")
GROUP_TIMEOUT_S = 60.0


def R(name, code, match=None, exc=CLEAN):
    """A case that must raise one of `exc` with a non-empty message (matching `match` when given)."""
    return {"name": name, "code": code, "expect": "raise", "match": match, "exc": list(exc)}


def OK(name, code, finite=True):
    """A case that must return; with finite=True its `result` (tensors) must be finite."""
    return {"name": name, "code": code, "expect": "ok", "finite": finite}


# Names every case can use (defined in the child before the cases run).
PRELUDE = r"""
import math, numpy as np, torch
import known_ops as ko
import recon
ops = torch.ops.known_ops
NAN, INF = float("nan"), float("inf")
V2 = ko.Volume((16, 16))
V3 = ko.Volume((8, 8, 8))
ANG = ko.uniform_angles(6)
ANG2PI = ko.uniform_angles(6, 2 * math.pi)
P2 = ko.ParallelBeam2D(ANG, 23)
F2 = ko.FanBeam2D(ANG2PI, 100.0, 100.0, 23)
P3 = ko.ParallelBeam3D(ANG, (6, 13))
C3 = ko.ConeBeam3D(ANG2PI, 100.0, 100.0, (6, 13))
A2 = ko.RayTransform(V2, P2)
A3 = ko.RayTransform(V3, C3)

def run(volume, geometry, model="joseph", dtype=torch.float64):
    A = ko.RayTransform(volume, geometry, model=model)
    x = torch.ones(volume.shape, dtype=dtype)
    y = A(x)
    return y, A.T(torch.ones_like(y))

def run_all_models(volume, geometry):
    return run(volume, geometry) + run(volume, geometry, dtype=torch.float32) + run(volume, geometry, "voxel")
"""

GROUPS = {
    # --- Volume ------------------------------------------------------------------------------------
    "volume": [
        R("shape-zero", "ko.Volume((0, 4))", "shape"),
        R("shape-negative", "ko.Volume((4, -4))", "shape"),
        R("shape-float", "ko.Volume((4.5, 4))", "shape"),
        R("shape-str", "ko.Volume('ab')", "shape"),
        R("shape-none", "ko.Volume(None)", "shape"),
        R("shape-4d", "ko.Volume((2, 2, 2, 2))", "shape"),
        R("spacing-nan", "ko.Volume((4, 4), spacing=NAN)", "spacing"),
        R("spacing-inf", "ko.Volume((4, 4), spacing=INF)", "spacing"),
        R("spacing-zero", "ko.Volume((4, 4), spacing=0.0)", "spacing"),
        R("spacing-negative", "ko.Volume((4, 4), spacing=-1.0)", "spacing"),
        R("spacing-str", "ko.Volume((4, 4), spacing='1')", "spacing"),
        R("spacing-3-for-2d", "ko.Volume((4, 4), spacing=(1, 2, 3))", "spacing"),
        R("spacing-tiny-2d", "run_all_models(ko.Volume((16, 16), spacing=3e-308), P2)", "spacing"),
        R("spacing-tiny-3d", "run(ko.Volume((8, 8, 8), spacing=3e-308), C3)", "spacing"),
        R("spacing-subnormal", "ko.Volume((4, 4), spacing=1e-320)", "spacing"),
        R("spacing-huge-2d", "run_all_models(ko.Volume((16, 16), spacing=1e300), P2)", "spacing"),
        R("spacing-huge-3d", "run(ko.Volume((8, 8, 8), spacing=1e300), P3)", "spacing"),
        R("spacing-min-2d", "run_all_models(ko.Volume((16, 16), spacing=1e-150), P2)", "spacing"),
        OK("spacing-min-3d", "result = run(ko.Volume((8, 8, 8), spacing=1e-150), C3)"),
        R("extent-huge", "ko.Volume((10**6, 4), spacing=1e146)", "shape and spacing"),
        R("offset-nan", "ko.Volume((4, 4), offset=NAN)", "offset"),
        R("offset-huge-2d", "run_all_models(ko.Volume((16, 16), offset=1e300), P2)", "offset"),
        R("offset-huge-3d", "run(ko.Volume((8, 8, 8), offset=(0, 1e300, 0)), P3)", "offset"),
    ],
    # --- 2D geometries -----------------------------------------------------------------------------
    "geometry2d": [
        R("parallel-angles-empty", "ko.ParallelBeam2D([], 5)", "angles"),
        R("parallel-angles-nan", "ko.ParallelBeam2D([0.0, NAN], 5)", "angles"),
        R("parallel-angles-str", "ko.ParallelBeam2D('abc', 5)", "angles"),
        R("parallel-angles-2d", "ko.ParallelBeam2D(np.zeros((2, 2)), 5)", "angles"),
        R("parallel-det-count-zero", "ko.ParallelBeam2D(ANG, 0)", "det_count"),
        R("parallel-det-count-float", "ko.ParallelBeam2D(ANG, 5.0)", "det_count"),
        R("parallel-det-spacing-zero", "ko.ParallelBeam2D(ANG, 5, det_spacing=0.0)", "det_spacing"),
        R("parallel-det-spacing-huge", "run_all_models(V2, ko.ParallelBeam2D(ANG, 23, det_spacing=1e308))",
          "det_spacing"),
        R("parallel-det-spacing-tiny", "run_all_models(V2, ko.ParallelBeam2D(ANG, 23, det_spacing=1e-310))",
          "det_spacing"),
        R("parallel-det-offset-huge", "run_all_models(V2, ko.ParallelBeam2D(ANG, 23, det_offset=1e300))",
          "det_offset"),
        R("parallel-vectors-nan", "ko.ParallelBeam2D.from_vectors([[NAN, 1, 0, 0, 1, 0]], 5)", "vectors"),
        R("parallel-vectors-huge", "run_all_models(V2, ko.ParallelBeam2D.from_vectors([[0, -1, 1e300, 0, 1, 0]], 5))",
          "vectors"),
        R("parallel-vectors-tiny-step", "run_all_models(V2, ko.ParallelBeam2D.from_vectors([[0, -1, 0, 0, 1e-300, 0]], 5))",
          "vectors"),
        R("parallel-vectors-shape", "ko.ParallelBeam2D.from_vectors(np.zeros((2, 5)), 5)", "vectors"),
        R("parallel-vectors-zero-ray", "ko.ParallelBeam2D.from_vectors([[0, 0, 0, 0, 1, 0]], 5)", "ray direction"),
        R("parallel-vectors-empty", "ko.ParallelBeam2D.from_vectors(np.zeros((0, 6)), 5)", "vectors"),
        R("fan-source-distance-zero", "ko.FanBeam2D(ANG, 0.0, 100.0, 5)", "source_distance"),
        R("fan-source-distance-inf", "ko.FanBeam2D(ANG, INF, 100.0, 5)", "source_distance"),
        R("fan-source-distance-huge-flat", "run_all_models(V2, ko.FanBeam2D(ANG2PI, 1e160, 100.0, 23))",
          "source_distance"),
        R("fan-source-distance-huge-curved",
          "run_all_models(V2, ko.FanBeam2D(ANG2PI, 1e160, 100.0, 23, detector='curved'))", "source_distance"),
        R("fan-detector-distance-huge", "run_all_models(V2, ko.FanBeam2D(ANG2PI, 100.0, 1e200, 23))",
          "detector_distance"),
        R("fan-det-offset-huge-flat", "run_all_models(V2, ko.FanBeam2D(ANG2PI, 100.0, 100.0, 23, det_offset=1e300))",
          r"det_offset(?!.*inside the volume)"),
        R("fan-det-offset-huge-curved",
          "run_all_models(V2, ko.FanBeam2D(ANG2PI, 100.0, 100.0, 23, det_offset=1e300, detector='curved'))",
          r"det_offset(?!.*inside the volume)"),
        R("fan-det-spacing-huge", "run_all_models(V2, ko.FanBeam2D(ANG2PI, 100.0, 100.0, 23, det_spacing=1e300))",
          "det_spacing"),
        R("fan-detector-kind", "ko.FanBeam2D(ANG, 100.0, 100.0, 5, detector='round')", "detector"),
        R("fan-detector-behind-source", "ko.FanBeam2D(ANG, 100.0, -200.0, 5)", "detector_distance"),
        R("fan-vectors-source-on-detector", "ko.FanBeam2D.from_vectors([[0, 0, 0, 0, 1, 0]], 5)", "vectors"),
        R("fan-vectors-huge-source", "run_all_models(V2, ko.FanBeam2D.from_vectors([[0, -1e200, 0, 100, 1, 0]], 5))",
          "vectors"),
        R("fan-vectors-curved-not-perpendicular",
          "ko.FanBeam2D.from_vectors([[0, -100, 0, 100, 1, 1]], 5, detector='curved')", "perpendicular"),
        R("fan-source-inside", "ko.RayTransform(V2, ko.FanBeam2D(ANG2PI, 5.0, 100.0, 23))", "source"),
        R("rays-det-count-huge", "ko.ParallelBeam2D([0.0, 1.0], 10**10).rays()", "det_count.*memory"),
        R("uniform-angles-zero", "ko.uniform_angles(0)", "n"),
        R("uniform-angles-nan-range", "ko.uniform_angles(4, NAN)", "range"),
    ],
    # --- 3D geometries -----------------------------------------------------------------------------
    "geometry3d": [
        R("parallel3d-det-shape-zero", "ko.ParallelBeam3D(ANG, (0, 5))", "det_shape"),
        R("parallel3d-det-shape-1d", "ko.ParallelBeam3D(ANG, 5)", "det_shape"),
        R("parallel3d-det-spacing-nan", "ko.ParallelBeam3D(ANG, (4, 5), det_spacing=NAN)", "det_spacing"),
        R("parallel3d-det-spacing-huge", "run_all_models(V3, ko.ParallelBeam3D(ANG, (6, 13), det_spacing=1e308))",
          "det_spacing"),
        R("parallel3d-det-spacing-tiny", "run_all_models(V3, ko.ParallelBeam3D(ANG, (6, 13), det_spacing=1e-300))",
          "det_spacing"),
        R("parallel3d-det-offset-huge", "run_all_models(V3, ko.ParallelBeam3D(ANG, (6, 13), det_offset=(0, 1e300)))",
          "det_offset"),
        R("parallel3d-vectors-nan", "ko.ParallelBeam3D.from_vectors([[0, -1, 0, 0, 0, 0, 1, 0, 0, 0, 0, NAN]], (4, 5))",
          "vectors"),
        R("parallel3d-vectors-huge",
          "run_all_models(V3, ko.ParallelBeam3D.from_vectors([[0, -1, 0, 1e300, 0, 0, 1, 0, 0, 0, 0, 1]], (4, 5)))",
          "vectors"),
        R("parallel3d-vectors-parallel-steps",
          "ko.ParallelBeam3D.from_vectors([[0, -1, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0]], (4, 5))", "parallel"),
        R("cone-source-distance-nan", "ko.ConeBeam3D(ANG2PI, NAN, 100.0, (4, 5))", "source_distance"),
        R("cone-source-distance-huge-flat", "run_all_models(V3, ko.ConeBeam3D(ANG2PI, 1e160, 100.0, (6, 13)))",
          "source_distance"),
        R("cone-source-distance-huge-curved",
          "run_all_models(V3, ko.ConeBeam3D(ANG2PI, 1e160, 100.0, (6, 13), detector='curved'))", "source_distance"),
        R("cone-det-spacing-huge", "run_all_models(V3, ko.ConeBeam3D(ANG2PI, 100.0, 100.0, (6, 13), det_spacing=1e300))",
          "det_spacing"),
        R("cone-det-offset-huge-curved",
          "run_all_models(V3, ko.ConeBeam3D(ANG2PI, 100.0, 100.0, (6, 13), det_offset=1e300, detector='curved'))",
          r"det_offset(?!.*inside the volume)"),
        R("cone-pitch-huge", "run_all_models(V3, ko.ConeBeam3D(ANG2PI, 100.0, 100.0, (6, 13), pitch=1e300))",
          "pitch"),
        R("cone-pitch-nan", "ko.ConeBeam3D(ANG2PI, 100.0, 100.0, (4, 5), pitch=NAN)", "pitch"),
        R("cone-angles-huge-helix", "run_all_models(V3, ko.ConeBeam3D([0.0, 1e300], 100.0, 100.0, (6, 13), pitch=1e10))",
          "pitch|angles"),
        R("cone-vectors-huge",
          "run_all_models(V3, ko.ConeBeam3D.from_vectors([[0, -1e200, 0, 0, 100, 0, 1, 0, 0, 0, 0, 1]], (6, 13)))",
          "vectors"),
        R("cone-vectors-inf", "ko.ConeBeam3D.from_vectors([[0, -INF, 0, 0, 100, 0, 1, 0, 0, 0, 0, 1]], (4, 5))",
          "vectors"),
        R("cone-vectors-source-in-plane",
          "ko.ConeBeam3D.from_vectors([[0, 100, 0, 0, 100, 0, 1, 0, 0, 0, 0, 1]], (4, 5))", "source"),
        R("cone-pm-nan", "ko.ConeBeam3D.from_projection_matrices(np.full((1, 3, 4), NAN), (4, 5), 1.0)", "P"),
        R("cone-pm-zero", "ko.ConeBeam3D.from_projection_matrices(np.zeros((1, 3, 4)), (4, 5), 1.0)", "P"),
        R("cone-pm-shape", "ko.ConeBeam3D.from_projection_matrices(np.zeros((1, 4, 3)), (4, 5), 1.0)", "P"),
        R("cone-pm-singular",
          "P = np.zeros((1, 3, 4)); P[0, 2, 3] = 1.0; ko.ConeBeam3D.from_projection_matrices(P, (4, 5), 1.0)", "P"),
        R("cone-pm-far-source",
          "P = C3.to_projection_matrices()[:1].copy(); P[0, :, :3] *= 1e-200; "
          "run_all_models(V3, ko.ConeBeam3D.from_projection_matrices(P, (6, 13), 1.0))", "P"),
        R("cone-pm-det-spacing-huge",
          "run_all_models(V3, ko.ConeBeam3D.from_projection_matrices(C3.to_projection_matrices(), (6, 13), 1e300))",
          "det_spacing"),
        R("cone-source-inside", "ko.RayTransform(V3, ko.ConeBeam3D(ANG2PI, 3.0, 100.0, (6, 13)))", "source"),
        R("cone-rays-det-shape-huge", "ko.ConeBeam3D(ANG2PI, 100.0, 100.0, (10**5, 10**5)).rays()", "det_shape.*memory"),
        R("cone-curved-over-90", "ko.ConeBeam3D(ANG2PI, 10.0, 10.0, (4, 101), det_spacing=7.0, detector='curved')",
          "det_spacing"),
    ],
    # --- RayTransform: construction and calls ---------------------------------------------------------
    "raytransform": [
        R("volume-not-volume", "ko.RayTransform((16, 16), P2)", "volume"),
        R("geometry-not-geometry", "ko.RayTransform(V2, 'parallel')", "geometry"),
        R("dimension-mismatch", "ko.RayTransform(V3, P2)", "volume"),
        R("model-unknown", "ko.RayTransform(V2, P2, model='siddon')", "model"),
        R("weighting-unknown", "ko.RayTransform(V2, P2, model='voxel', weighting='cosine')", "weighting"),
        R("forward-wrong-shape", "A2(torch.zeros(15, 16))", "x"),
        R("forward-int", "A2(torch.zeros(16, 16, dtype=torch.int64))", "x"),
        R("forward-complex", "A2(torch.zeros(16, 16, dtype=torch.complex64))", "x"),
        R("forward-list", "A2([[0.0] * 16] * 16)", "x"),
        R("forward-none", "A2(None)", "x"),
        R("forward-0d", "A2(torch.tensor(1.0))", "x"),
        OK("forward-empty-batch", "result = A2(torch.zeros(0, 16, 16))"),
        OK("forward-nan-data", "result = A2(torch.full((16, 16), NAN))", finite=False),
        OK("forward-inf-data", "result = A2(torch.full((16, 16), INF))", finite=False),
        R("adjoint-wrong-shape", "A2.T(torch.zeros(6, 22))", "y"),
        R("adjoint-int", "A2.T(torch.zeros(6, 23, dtype=torch.int32))", "y"),
        OK("adjoint-nan-data", "result = A2.T(torch.full((6, 23), NAN))", finite=False),
        R("views-out-of-range", "A2(torch.zeros(16, 16), views=[6])", "views"),
        R("views-float", "A2(torch.zeros(16, 16), views=[0.5])", "views"),
        R("views-float-tensor", "A2(torch.zeros(16, 16), views=torch.tensor([0.0]))", "views"),
        R("views-bool-tensor", "A2(torch.zeros(16, 16), views=torch.tensor([True]))", "views"),
        R("views-empty", "A2(torch.zeros(16, 16), views=[])", "views"),
        R("views-nested", "A2(torch.zeros(16, 16), views=[[0, 1]])", "views"),
        R("views-huge", "A2(torch.zeros(16, 16), views=[10**30])", "views"),
        R("views-str", "A2(torch.zeros(16, 16), views='0')", "views"),
        R("views-adjoint-count", "A2.T(torch.zeros(2, 23), views=[0, 1, 2])", "y"),
        R("views-3d-out-of-range", "A3(torch.zeros(8, 8, 8), views=torch.tensor([-7]))", "views"),
        R("forward3d-wrong-shape", "A3(torch.zeros(8, 8, 7))", "x"),
        R("adjoint3d-wrong-shape", "A3.T(torch.zeros(6, 6, 12))", "y"),
        OK("forward3d-nan-data", "result = A3(torch.full((8, 8, 8), NAN))", finite=False),
        R("det-count-huge", "ko.RayTransform(V2, ko.ParallelBeam2D([0.0, 1.0], 10**9))", "det_count"),
        R("views-det-count-huge", "ko.RayTransform(V2, ko.ParallelBeam2D(ko.uniform_angles(10**5), 10**6))",
          "det_count|n_views"),
        R("forward-batch-huge", "A2(torch.zeros(1, 16, 16).expand(10**9, 16, 16))", "memory|GB"),
        R("adjoint-batch-huge", "A2.T(torch.zeros(1, 6, 23).expand(10**9, 6, 23))", "memory|GB"),
        R("forward3d-detector-huge",
          "ko.RayTransform(V3, ko.ConeBeam3D(ANG2PI, 100.0, 100.0, (10**5, 10**5)))(torch.zeros(8, 8, 8))",
          "memory|GB"),
        R("adjoint3d-volume-huge",
          "A = ko.RayTransform(ko.Volume((10**4, 10**4, 10**4)), ko.ParallelBeam3D(ANG, (4, 5))); "
          "A.T(torch.zeros(6, 4, 5))", "memory|GB"),
        OK("normal-sizes-accepted",
           "A = ko.RayTransform(ko.Volume((256, 256)), ko.ParallelBeam2D(ko.uniform_angles(180), 367)); "
           "result = A(torch.zeros(4, 256, 256)), "
           "ko.RayTransform(ko.Volume((64, 64, 64)), ko.ConeBeam3D(ANG2PI, 500.0, 500.0, (64, 64), 2.0))"
           "(torch.zeros(64, 64, 64))"),
    ],
    # --- filters, weights, FBP/FDK --------------------------------------------------------------------
    "filters_weights_recon": [
        R("ramp-det-count-zero", "ko.RampFilter(0)", "det_count"),
        R("ramp-det-count-float", "ko.RampFilter(5.5)", "det_count"),
        R("ramp-det-count-huge", "ko.RampFilter(10**10)", "det_count|memory|GB"),
        R("ramp-det-spacing-nan", "ko.RampFilter(5, det_spacing=NAN)", "det_spacing"),
        R("ramp-det-spacing-zero", "ko.RampFilter(5, det_spacing=0.0)", "det_spacing"),
        R("ramp-det-spacing-tiny", "ko.RampFilter(5, det_spacing=1e-320)(torch.ones(3, 5))", "det_spacing"),
        R("ramp-det-spacing-huge", "ko.RampFilter(5, det_spacing=1e300)(torch.ones(3, 5))", "det_spacing"),
        R("ramp-window", "ko.RampFilter(5, window='box')", "window"),
        R("ramp-cutoff-nan", "ko.RampFilter(5, cutoff=NAN)", "cutoff"),
        R("ramp-cutoff-zero", "ko.RampFilter(5, cutoff=0.0)", "cutoff"),
        R("ramp-padding-small", "ko.RampFilter(5, padding=3)", "padding"),
        R("ramp-padding-huge", "ko.RampFilter(5, padding=10**12)", "padding|memory|GB"),
        R("ramp-arc-radius-nan", "ko.RampFilter(5, arc_radius=NAN)", "arc_radius"),
        R("ramp-arc-radius-small", "ko.RampFilter(50, arc_radius=1.0)", "arc_radius"),
        R("ramp-forward-wrong-shape", "ko.RampFilter(5)(torch.ones(3, 4))", "p"),
        R("ramp-forward-int", "ko.RampFilter(5)(torch.ones(3, 5, dtype=torch.int64))", "p"),
        OK("ramp-forward-nan", "result = ko.RampFilter(5)(torch.full((3, 5), NAN))", finite=False),
        R("weight-no-args", "ko.ProjectionWeight()", "shape|init"),
        R("weight-shape-zero", "ko.ProjectionWeight(shape=(0, 3))", "shape"),
        R("weight-shape-huge", "ko.ProjectionWeight(shape=(10**7, 10**7))", "shape|memory|GB"),
        R("weight-init-nan", "ko.ProjectionWeight(init=[1.0, NAN])", "init"),
        R("weight-init-str", "ko.ProjectionWeight(init='abc')", "init"),
        R("weight-forward-wrong-shape", "ko.ProjectionWeight(shape=(6, 23))(torch.ones(5, 23))", "y"),
        R("parker-parallel-vectors-one-view", "ko.parker_weights(ko.ParallelBeam2D([0.0], 5))", "views|geometry"),
        R("parker-q-nan", "ko.parker_weights(F2, q=NAN)", "q"),
        R("parker-q-zero", "ko.parker_weights(F2, q=0.0)", "q"),
        R("parker-not-geometry", "ko.parker_weights('fan')", "geometry"),
        R("parker-det-count-huge", "ko.parker_weights(ko.FanBeam2D(ko.uniform_angles(1000, 4.0), 100.0, 100.0, 10**8))",
          "det_count|memory|GB"),
        R("cosine-parallel", "ko.cosine_weights(P2)", "geometry"),
        R("cosine-not-geometry", "ko.cosine_weights(None)", "geometry"),
        R("cosine-det-shape-huge", "v = C3.to_vectors(); v[1, :3] *= 1.5; "
          "ko.cosine_weights(ko.ConeBeam3D.from_vectors(v, (10**5, 10**5)))", "det_shape.*memory"),
        R("cosine-circular-det-shape-huge",
          "ko.cosine_weights(ko.ConeBeam3D(ANG2PI, 100.0, 100.0, (10**6, 10**6)))", "pixels.*memory"),
        R("fbp-volume-not-volume", "recon.FBP((16, 16), P2)", "volume"),
        R("fbp-geometry-mismatch", "recon.FBP(V3, P2)", "volume|geometry"),
        R("fbp-filter-unknown", "recon.FBP(V2, P2, filter='box')", "window|filter"),
        R("fbp-cutoff-nan", "recon.FBP(V2, P2, cutoff=NAN)", "cutoff"),
        R("fbp-forward-wrong-shape", "recon.FBP(V2, P2)(torch.ones(5, 23))", "y|p"),
        R("fbp-fan-from-vectors", "recon.FBP(V2, ko.FanBeam2D.from_vectors(F2.to_vectors(), 23))", "geometry"),
        R("fbp-det-count-huge", "recon.FBP(V2, ko.ParallelBeam2D(ko.uniform_angles(4), 10**9))",
          "det_count|memory|GB"),
        OK("fbp-nan-data", "result = recon.FBP(V2, P2)(torch.full((6, 23), NAN))", finite=False),
        R("fdk-parallel", "recon.FDK(V3, P3)", "geometry"),
        R("fdk-helical", "recon.FDK(V3, ko.ConeBeam3D(ANG2PI, 100.0, 100.0, (6, 13), pitch=5.0))", "geometry"),
        R("fdk-2d-volume", "recon.FDK(V2, C3)", "volume"),
        R("fdk-source-distance-huge", "recon.FDK(V3, ko.ConeBeam3D(ANG2PI, 1e160, 100.0, (6, 13)))",
          "source_distance"),
    ],
    # --- the registered ops with inconsistent operands -----------------------------------------------
    "raw_ops_2d": [
        R("forward-nan-ray-table",
          "r = A2._rays.clone(); r[0, 0, 0] = NAN; ops.joseph2d_forward(torch.ones(1, 16, 16, dtype=torch.float64), r, A2._views)",
          "finite|table"),
        R("forward-inf-slope",
          "r = A2._rays.clone(); r[0, 3, 1] = INF; ops.joseph2d_forward(torch.ones(1, 16, 16, dtype=torch.float64), r, A2._views)",
          "finite|table"),
        OK("forward-huge-slope-f32",  # a steep ray that meets the image at one column only: computable
           "r = A2._rays_f32.clone(); r[0, 3, 0] = 5.0; r[0, 3, 1] = 1e30; "
           "result = ops.joseph2d_forward(torch.ones(9, 16, 16), r, A2._views_f32), "
           "ops.joseph2d_adjoint(torch.ones(9, 6, 23), r, A2._views_f32, 16, 16)"),
        R("forward-huge-table-f32",
          "r = A2._rays_f32.clone(); r[:, :, 0] = 3e7; r[:, :, 1] = -3e6; "
          "ops.joseph2d_forward(torch.ones(3, 16, 16), r, A2._views_f32)", "table|ray"),
        R("adjoint-nan-ray-table",
          "r = A2._rays.clone(); r[2, 5, 0] = NAN; ops.joseph2d_adjoint(torch.ones(1, 6, 23, dtype=torch.float64), r, A2._views, 16, 16)",
          "finite|table"),
        R("adjoint-nan-ray-table-batch-f32",
          "r = A2._rays_f32.clone(); r[2, 5, 1] = NAN; ops.joseph2d_adjoint(torch.ones(9, 6, 23), r, A2._views_f32, 16, 16)",
          "finite|table"),
        R("gather-nan-view-table",
          "v = A2._views.clone(); v[:, 0] = NAN; ops.joseph2d_adjoint_gather(torch.ones(1, 6, 23, dtype=torch.float64), A2._rays, v, 16, 16)",
          "finite|table"),
        R("gather-nan-ray-table",
          "r = A2._rays.clone(); r[:, :, 0] = NAN; ops.joseph2d_adjoint_gather(torch.ones(1, 6, 23, dtype=torch.float64), r, A2._views, 16, 16)",
          "finite|table"),
        R("adjoint-sino-views-mismatch",
          "ops.joseph2d_adjoint(torch.ones(1, 5, 23, dtype=torch.float64), A2._rays, A2._views, 16, 16)", "match"),
        R("adjoint-sino-bins-mismatch",
          "ops.joseph2d_adjoint(torch.ones(1, 6, 24, dtype=torch.float64), A2._rays, A2._views, 16, 16)", "match"),
        R("adjoint-negative-size",
          "ops.joseph2d_adjoint(torch.ones(1, 6, 23, dtype=torch.float64), A2._rays, A2._views, -16, 16)", "size"),
        R("adjoint-huge-size",
          "ops.joseph2d_adjoint(torch.ones(1, 6, 23, dtype=torch.float64), A2._rays, A2._views, 10**7, 10**7)",
          "memory|large|allocate"),
        R("forward-dtype-mismatch", "ops.joseph2d_forward(torch.ones(1, 16, 16), A2._rays, A2._views)", "dtype"),
        R("forward-views-rows-mismatch",
          "ops.joseph2d_forward(torch.ones(1, 16, 16, dtype=torch.float64), A2._rays, A2._views[:2])", "view table"),
        R("forward-table-2d", "ops.joseph2d_forward(torch.ones(1, 16, 16, dtype=torch.float64), A2._rays[0], A2._views)",
          "ray table"),
        R("forward-image-2d", "ops.joseph2d_forward(torch.ones(16, 16, dtype=torch.float64), A2._rays, A2._views)",
          "image"),
        R("forward-int-image", "ops.joseph2d_forward(torch.ones(1, 16, 16, dtype=torch.int64), A2._rays, A2._views)",
          "float"),
        R("tables-nan-vectors", "ops.joseph2d_tables(torch.full((2, 6), NAN, dtype=torch.float64), 0, 5, 4, 4, [1.0, 1.0, 0.0, 0.0])",
          "finite"),
        R("tables-bad-kind", "ops.joseph2d_tables(torch.zeros(2, 6, dtype=torch.float64), 7, 5, 4, 4, [1.0, 1.0, 0.0, 0.0])",
          "kind"),
        R("tables-zero-spacing", "ops.joseph2d_tables(torch.ones(2, 6, dtype=torch.float64), 0, 5, 4, 4, [0.0, 1.0, 0.0, 0.0])",
          "spacing"),
        R("tables-huge-n-det", "ops.joseph2d_tables(torch.ones(2, 6, dtype=torch.float64), 0, 10**12, 4, 4, [1.0, 1.0, 0.0, 0.0])",
          "memory|large|allocate"),
        R("rays-huge-n-det", "ops.geometry2d_rays(torch.ones(2, 6, dtype=torch.float64), 0, 10**12)",
          "memory|large|allocate"),
        R("voxel2d-nan-views",
          "v = A2._views.clone(); v[1, 3] = NAN; ops.voxel2d_forward(torch.ones(1, 16, 16, dtype=torch.float64), v, 23, [1.0, 1.0], None)",
          "finite|table"),
        R("voxel2d-adjoint-mismatch",
          "ops.voxel2d_adjoint(torch.ones(1, 5, 23, dtype=torch.float64), A2._views, 16, 16, [1.0, 1.0], None)", "views"),
        R("voxel2d-fdk-shape",
          "ops.voxel2d_adjoint(torch.ones(1, 6, 23, dtype=torch.float64), A2._views, 16, 16, [1.0, 1.0], torch.ones(5, dtype=torch.float64))",
          "fdk"),
        R("voxel2d-fdk-nan",
          "ops.voxel2d_adjoint(torch.ones(1, 6, 23, dtype=torch.float64), A2._views, 16, 16, [1.0, 1.0], torch.full((6,), NAN, dtype=torch.float64))",
          "fdk"),
        R("voxel2d-spacing-nan",
          "ops.voxel2d_forward(torch.ones(1, 16, 16, dtype=torch.float64), A2._views, 23, [NAN, 1.0], None)", "spacing"),
        R("voxel2d-negative-n-det",
          "ops.voxel2d_forward(torch.ones(1, 16, 16, dtype=torch.float64), A2._views, -3, [1.0, 1.0], None)", "n_det"),
    ],
    "raw_ops_3d": [
        R("forward-nan-frame",
          "f = A3._frames.clone(); f[0, 4] = NAN; ops.joseph3d_forward(torch.ones(1, 8, 8, 8), f, 6, 13)", "finite"),
        R("forward-nan-frame-f64",
          "f = A3._frames.clone(); f[1, 8] = NAN; ops.joseph3d_forward(torch.ones(2, 8, 8, 8, dtype=torch.float64), f, 6, 13)",
          "finite"),
        R("forward-huge-frame",
          "f = A3._frames.clone(); f[0, 4:7] = 1e300; ops.joseph3d_forward(torch.ones(1, 8, 8, 8), f, 6, 13)",
          "frame|finite|large"),
        R("adjoint-nan-frame",
          "f = A3._frames.clone(); f[0, 1] = NAN; ops.joseph3d_adjoint(torch.ones(1, 6, 6, 13), f, 8, 8, 8)", "finite"),
        R("adjoint-nan-map",
          "f = A3._frames.clone(); f[:, 21:33] = NAN; ops.joseph3d_adjoint(torch.ones(1, 6, 6, 13), f, 8, 8, 8)", "finite"),
        R("gather-nan-frame",
          "f = A3._frames.clone(); f[0, 4] = NAN; ops.joseph3d_adjoint_gather(torch.ones(1, 6, 6, 13), f, 8, 8, 8)",
          "finite"),
        R("forward-inf-kind",
          "f = A3._frames.clone(); f[0, 0] = INF; ops.joseph3d_forward(torch.ones(1, 8, 8, 8), f, 6, 13)", "finite|kind"),
        R("forward-bad-kind",
          "f = A3._frames.clone(); f[0, 0] = 7.0; ops.joseph3d_forward(torch.ones(1, 8, 8, 8), f, 6, 13)", "kind"),
        R("forward-shape-mismatch", "ops.joseph3d_forward(torch.ones(1, 8, 8, 9), A3._frames, 6, 13)", "shape"),
        R("forward-detector-mismatch", "ops.joseph3d_forward(torch.ones(1, 8, 8, 8), A3._frames, 7, 13)", "detector"),
        R("adjoint-views-mismatch", "ops.joseph3d_adjoint(torch.ones(1, 5, 6, 13), A3._frames, 8, 8, 8)", "views"),
        R("adjoint-detector-mismatch", "ops.joseph3d_adjoint(torch.ones(1, 6, 6, 12), A3._frames, 8, 8, 8)", "detector"),
        R("adjoint-huge-volume", "ops.joseph3d_adjoint(torch.ones(1, 6, 6, 13), A3._frames, 10**5, 10**5, 10**5)",
          "shape|memory|large|allocate"),
        R("frames-nan-vectors",
          "ops.joseph3d_frames(torch.full((2, 12), NAN, dtype=torch.float64), 1, 4, 5, 8, 8, 8, [1.0, 1.0, 1.0, 0.0, 0.0, 0.0])",
          "finite"),
        R("frames-zero-spacing",
          "ops.joseph3d_frames(torch.as_tensor(C3.to_vectors()), 1, 6, 13, 8, 8, 8, [0.0, 1.0, 1.0, 0.0, 0.0, 0.0])",
          "spacing"),
        R("frames-degenerate-vectors",
          "ops.joseph3d_frames(torch.zeros(2, 12, dtype=torch.float64), 1, 4, 5, 8, 8, 8, [1.0, 1.0, 1.0, 0.0, 0.0, 0.0])",
          "finite|degenerate"),
        R("voxel3d-nan-frame",
          "f = A3._frames.clone(); f[0, 22] = NAN; ops.voxel3d_adjoint(torch.ones(1, 6, 6, 13), f, 8, 8, 8, None)",
          "finite"),
        R("voxel3d-forward-nan-frame",
          "f = A3._frames.clone(); f[0, 30] = NAN; ops.voxel3d_forward(torch.ones(1, 8, 8, 8), f, 6, 13, None)",
          "finite"),
        R("voxel3d-fdk-shape",
          "ops.voxel3d_forward(torch.ones(1, 8, 8, 8), A3._frames, 6, 13, torch.ones(2, dtype=torch.float64))", "fdk"),
        R("voxel3d-fdk-inf",
          "ops.voxel3d_forward(torch.ones(1, 8, 8, 8), A3._frames, 6, 13, torch.full((6,), INF, dtype=torch.float64))",
          "fdk"),
        R("voxel3d-detector-huge",
          "ops.voxel3d_adjoint(torch.ones(1, 6, 6, 13), A3._frames, 8, 8, 8, None); "
          "ops.voxel3d_forward(torch.ones(1, 8, 8, 8), A3._frames, 10**6, 10**6, None)",
          "detector|shape|memory|large|allocate"),
        R("parallel-threads-negative", "ops._parallel_threads_used(-1)", "n"),
    ],
}

# --- the child: runs the cases of one group, announcing each ---------------------------------------

CHILD = r"""
import json, re, sys, traceback
cases = json.loads(sys.stdin.read())
def say(**kw):
    sys.stdout.write(json.dumps(kw) + "\n"); sys.stdout.flush()
ns = {}
exec(compile(PRELUDE, "<prelude>", "exec"), ns)
ns["torch"].set_num_threads(1)
def finite(value):
    torch = ns["torch"]
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all()) if value.dtype.is_floating_point else True
    if isinstance(value, (tuple, list)):
        return all(finite(v) for v in value)
    return True
for case in cases:
    say(event="start", name=case["name"])
    local = dict(ns)
    try:
        try:  # an expression: its value is the case's result
            code = compile(case["code"], case["name"], "eval")
        except SyntaxError:
            exec(compile(case["code"], case["name"], "exec"), local)
        else:
            local["result"] = eval(code, local)
    except BaseException as err:
        say(event="raised", name=case["name"], type=type(err).__name__,
            mro=[k.__name__ for k in type(err).__mro__], message=str(err)[:2000])
    else:
        say(event="returned", name=case["name"], finite=finite(local.get("result")))
"""


def _run_child(cases: list[dict], timeout: float) -> tuple[dict, str | None, str]:
    """Runs `cases` in one child; returns (outcomes by name, the name of the case that crashed or hung
    (None when the child finished, or failed before its first case), how it ended)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONFAULTHANDLER="")
    payload = json.dumps([{"name": c["name"], "code": c["code"]} for c in cases])
    script = "PRELUDE = " + repr(PRELUDE) + "\n" + CHILD
    try:
        proc = subprocess.run([sys.executable, "-c", script], input=payload, capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT, env=env)
        stdout, ending = proc.stdout, None if proc.returncode == 0 else _describe_exit(proc.returncode, proc.stderr)
    except subprocess.TimeoutExpired as err:
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        ending = f"hung (no exit within {timeout:.0f} s)"
    outcomes, current = {}, None
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event["event"] == "start":
            current = event["name"]
        else:
            outcomes[event["name"]] = event
            current = None
    if ending is None:
        return outcomes, None, "exited cleanly"
    return outcomes, current, ending


def _describe_exit(returncode: int, stderr: str) -> str:
    if returncode < 0:
        import signal

        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with status {returncode}: {stderr.strip()[-500:]}"


def run_group(cases: list[dict], timeout: float = GROUP_TIMEOUT_S) -> dict:
    """Outcome of every case of a group: a child runs them in order; when it crashes or hangs, the case
    it was running is charged with that, and the cases after it run in a fresh child."""
    outcomes: dict = {}
    remaining = list(cases)
    while remaining:
        start = time.monotonic()
        done, culprit, ending = _run_child(remaining, timeout)
        outcomes.update(done)
        if culprit is None and not done and ending != "exited cleanly":
            # the child failed before its first case (e.g. the prelude's imports): no case is to blame,
            # and running them again one by one would fail the same way
            for c in remaining:
                outcomes[c["name"]] = {"event": "crashed", "name": c["name"], "how": f"failed before any case: {ending}"}
            break
        if culprit is None and len(done) < len(remaining) and ending != "exited cleanly":
            culprit = next(c["name"] for c in remaining if c["name"] not in done)  # died between cases
        if culprit is not None:
            outcomes[culprit] = {"event": "crashed", "name": culprit, "how": ending,
                                 "seconds": round(time.monotonic() - start, 1)}
        remaining = [c for c in remaining if c["name"] not in outcomes]
        if culprit is None and remaining:  # the child ended cleanly without running them (should not happen)
            for c in remaining:
                outcomes[c["name"]] = {"event": "crashed", "name": c["name"], "how": ending}
            break
    return outcomes


def verdict(case: dict, outcome: dict) -> str | None:
    """None when the outcome is what the case expects, else what is wrong."""
    import re

    event = outcome["event"]
    if event == "crashed":
        return f"the child process {outcome['how']}"
    if case["expect"] == "raise":
        if event != "raised":
            finite = "" if outcome.get("finite", True) else " (with non-finite values)"
            return "returned" + finite + " instead of raising"
        if not set(case["exc"]) & set(outcome["mro"]):
            return f"raised {outcome['type']} (expected one of {case['exc']}): {outcome['message']}"
        if not outcome["message"].strip():
            return f"raised {outcome['type']} without a message"
        if case["match"] and not re.search(case["match"], outcome["message"], re.IGNORECASE | re.DOTALL):
            return f"raised {outcome['type']} whose message does not match {case['match']!r}: {outcome['message']}"
        return None
    if event != "returned":
        return f"raised {outcome['type']}: {outcome['message']}"
    if case["finite"] and not outcome["finite"]:
        return "returned non-finite values"
    return None


def describe(outcome: dict) -> str:
    event = outcome["event"]
    if event == "crashed":
        return outcome["how"]
    if event == "raised":
        return f"{outcome['type']}: {outcome['message'].splitlines()[0][:160] if outcome['message'] else ''}"
    return "returned" + ("" if outcome["finite"] else " non-finite values")


@pytest.fixture(scope="module")
def outcomes():
    """Every group's outcomes, the groups run concurrently (one child per CPU)."""
    workers = max(1, min(len(GROUPS), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))
    with ThreadPoolExecutor(workers) as pool:
        futures = {group: pool.submit(run_group, cases) for group, cases in GROUPS.items()}
        return {group: future.result() for group, future in futures.items()}


@pytest.mark.parametrize(
    "group, case",
    [pytest.param(group, case, id=f"{group}-{case['name']}") for group, cases in GROUPS.items() for case in cases],
)
def test_hostile_input_fails_cleanly(outcomes, group, case):
    problem = verdict(case, outcomes[group][case["name"]])
    assert problem is None, f"{group}/{case['name']}: {case['code']}\n-> {problem}"


def test_case_names_are_unique():
    for group, cases in GROUPS.items():
        names = [c["name"] for c in cases]
        assert len(names) == len(set(names)), group


def test_a_crash_is_attributed_to_its_case():
    """The harness itself: a case that kills its child is charged with it, and the cases after it still run."""
    cases = [
        OK("fine", "result = torch.zeros(2)"),
        R("segfault", "import ctypes; ctypes.string_at(0)"),
        R("after", "raise ValueError('after the crash')", "after"),
    ]
    found = run_group(cases, timeout=60.0)
    assert verdict(cases[0], found["fine"]) is None
    assert found["segfault"]["event"] == "crashed" and "SIGSEGV" in found["segfault"]["how"]
    assert verdict(cases[2], found["after"]) is None


if __name__ == "__main__":
    chosen = sys.argv[1:] or list(GROUPS)
    for group in chosen:
        found = run_group(GROUPS[group])
        for case in GROUPS[group]:
            outcome = found[case["name"]]
            status = "ok  " if verdict(case, outcome) is None else "FAIL"
            print(f"{status} {group}/{case['name']}: {describe(outcome)}")
