"""recon: reconstruction on top of known_ops.

Filtered back-projection (parallel beam so far) in :mod:`recon.analytic`; iterative methods (Landweber, SIRT, CGLS, TV by PDHG) in :mod:`recon.iterative` and image
quality metrics (PSNR, SSIM, RMSE) in :mod:`recon.metrics`; see ``docs/reconstruction.md``.
"""
from . import metrics
from .analytic import FBP, FDK, fbp, fdk
from .iterative import cgls, landweber, sirt, total_variation, tv_pdhg
from .metrics import psnr, rmse, ssim

__all__ = ["FBP", "fbp", "FDK", "fdk", "landweber", "sirt", "cgls", "tv_pdhg", "total_variation", "metrics", "psnr", "ssim", "rmse"]
