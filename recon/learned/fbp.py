"""LearnedFBP: filtered back-projection with learnable projection-domain weights.

J. Wuerfl, F. C. Ghesu, V. Christlein and A. Maier, "Deep learning computed tomography", MICCAI 2016;
T. Wuerfl, M. Hoffmann, V. Christlein, K. Breininger, Y. Huang, M. Unberath and A. K. Maier, "Deep
learning computed tomography: learning projection-domain weights from image domain in limited angle
problems", IEEE TMI 37(6), 2018. The FBP/FDK chain (``recon.FBP``) with the redundancy weights made
a parameter per view and detector column, initialised to Parker's (for the scan's range, also
limited-angle ones); optionally the ramp filter (initialised to the ramp) and the cosine weights are
learned too. The back-projector stays frozen; its gradient is its exact transpose.
"""
from __future__ import annotations

import known_ops as ko
from recon.analytic import FBP

__all__ = ["LearnedFBP"]


class LearnedFBP(FBP):
    """``recon.FBP`` with learnable redundancy weights (and, on request, filter and cosine weights).

    Parallel, fan (flat and curved detectors) and circular cone beams (FDK). At initialisation it
    equals ``recon.FBP`` / ``recon.FDK`` with the same ``filter``/``cutoff`` (to rounding).

    Args:
        volume, geometry: as ``recon.FBP``.
        filter, cutoff, padding: the ramp filter's window, cut-off and padding.
        learn_weights: learn the redundancy weights (default ``True``).
        learn_filter: learn the filter's frequency response (default ``False``).
        learn_cosine: learn the cosine weights of fan/cone beams (default ``False``).
        Other keyword arguments go to ``recon.FBP`` (e.g. ``redundancy_weighting`` to start from
        other weights, ``backprojector``).
    """

    def __init__(self, volume: ko.Volume, geometry, filter: str = "ram-lak", cutoff: float = 1.0, padding=True,
                 learn_weights: bool = True, learn_filter: bool = False, learn_cosine: bool = False, **kwargs):
        for name, flag in (("learn_weights", learn_weights), ("learn_filter", learn_filter), ("learn_cosine", learn_cosine)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        if "learnable" in kwargs:
            raise TypeError("LearnedFBP: use learn_weights, learn_filter and learn_cosine instead of learnable")
        parts = [name for name, flag in (("redundancy", learn_weights), ("filter", learn_filter), ("cosine", learn_cosine)) if flag]
        if learn_cosine and not isinstance(geometry, (ko.FanBeam2D, ko.ConeBeam3D)):
            raise ValueError("learn_cosine: parallel beams have no cosine weights")
        super().__init__(volume, geometry, filter=filter, cutoff=cutoff, padding=padding, learnable=parts, **kwargs)
