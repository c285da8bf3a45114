"""Project and back-project the modified Shepp-Logan phantom in parallel and fan geometry,
then reconstruct it by FBP and TV from a full and a limited-angle scan.

Prints, for each geometry, the warm time of the forward projection A and of the
back-projection A.T, the adjoint test value and the relative L2 error of A x
against the exact analytic line integrals of the phantom's ellipses, and writes
a figure (phantom, sinograms, back-projections) to benchmarks/results/demo.png.
Then, from exact sinograms with 1 % Gaussian noise (parallel beam, 128 x 128 at
2 mm, 180 degrees and 120 degrees), prints the PSNR of FBP (Hann window) and of
TV (PDHG) and writes the reconstructions to benchmarks/results/demo_recon.png.
Last, it trains a LearnedFBP (learned redundancy weights, Wuerfl et al.) for about a minute
on random ellipses and shows it beside FBP and TV on a 140-degree fan scan
(benchmarks/results/demo_learned.png; the full experiment is benchmarks/limited_angle.py).

    python benchmarks/demo.py [--device cuda] [--output path.png]

All lengths are in mm, angles in degrees on the figure; see docs/conventions.md.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # use this checkout's known_ops and phantoms, installed or not

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import known_ops as ko  # noqa: E402
import phantoms  # noqa: E402
import recon  # noqa: E402
import recon.learned  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def fan_det_count(volume: ko.Volume, source_distance: float, detector_distance: float, det_spacing: float) -> int:
    """Flat-detector bins needed so that every ray through the volume's circumscribed circle hits the detector."""
    radius = math.hypot(*volume.extent) / 2
    half_angle = math.asin(radius / source_distance)
    half_width = (source_distance + detector_distance) * math.tan(half_angle)
    return math.ceil(2 * half_width / det_spacing)


def warm_ms(fn, arg, device: torch.device, repeats: int = 10) -> float:
    """Median wall time of fn(arg) in ms, after one warm-up call."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn(arg)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(arg)
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def adjoint_test(A: ko.RayTransform, device: torch.device) -> float:
    """|<A x, y> - <x, A.T y>| / (|A x| |y|) for random x, y in float64."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(A.domain_shape, generator=gen, dtype=torch.float64).to(device)
    y = torch.rand(A.range_shape, generator=gen, dtype=torch.float64).to(device)
    ax = A(x)
    lhs = torch.sum(ax * y)
    rhs = torch.sum(x * A.T(y))
    return (abs(lhs - rhs) / (ax.norm() * y.norm())).item()


def run_case(name: str, volume: ko.Volume, geometry, image: torch.Tensor, device: torch.device) -> dict:
    A = ko.RayTransform(volume, geometry).to(device)
    with torch.no_grad():
        sino = A(image)
        back = A.T(sino)
        t_fwd = warm_ms(A, image, device)
        t_adj = warm_ms(A.T, sino, device)
        adj = adjoint_test(A, device)
    exact = phantoms.shepp_logan_projections(geometry, volume=volume, dtype=torch.float64)
    sino64 = sino.detach().cpu().double()
    rel_err = ((sino64 - exact).norm() / exact.norm()).item()
    print(f"{name}: {geometry!r}")
    print(f"  forward  A   (1 image, float32): {t_fwd:8.2f} ms")
    print(f"  adjoint  A.T (1 image, float32): {t_adj:8.2f} ms")
    print(f"  adjoint test (float64):          {adj:.2e}")
    print(f"  relative L2 error of A x vs the exact line integrals: {rel_err:.4f}")
    return {"name": name, "geometry": geometry, "sino": sino64.numpy(), "exact": exact.numpy(),
            "back": back.detach().cpu().double().numpy(), "rel_err": rel_err}


def image_extent(volume: ko.Volume) -> list[float]:
    """[x_min, x_max, y_min, y_max] of the grid's outer edges, for imshow(origin='lower')."""
    (ylo, yhi), (xlo, xhi) = volume.bounds
    return [xlo, xhi, ylo, yhi]


def sinogram_extent(geometry) -> list[float]:
    """Detector position of the bin edges (mm, along the detector) by view angle (degrees)."""
    n = geometry.det_count
    du = float(geometry.det_spacing[0])
    angles = np.degrees(geometry.angles)
    step = angles[1] - angles[0] if len(angles) > 1 else 1.0
    return [-n / 2 * du, n / 2 * du, angles[0] - step / 2, angles[-1] + step / 2]


def make_figure(volume: ko.Volume, image: np.ndarray, cases: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(2, 3, figsize=(15, 9.5), layout="constrained")
    ext = image_extent(volume)

    ax = axes[0, 0]
    im = ax.imshow(image, origin="lower", extent=ext, cmap="gray")
    ax.set(title=f"modified Shepp-Logan, {volume.shape[0]}x{volume.shape[1]} at {volume.spacing[0]:g} mm",
           xlabel="x (mm)", ylabel="y (mm)")
    fig.colorbar(im, ax=ax, shrink=0.8)

    for col, case in zip((1, 2), cases):
        ax = axes[0, col]
        im = ax.imshow(case["sino"], origin="lower", extent=sinogram_extent(case["geometry"]), aspect="auto",
                       cmap="gray")
        ax.set(title=f"{case['name']} sinogram A x (value x mm)", xlabel="detector position u (mm)",
               ylabel="view angle t (degrees)")
        fig.colorbar(im, ax=ax, shrink=0.8)

        ax = axes[1, col]
        im = ax.imshow(case["back"], origin="lower", extent=ext, cmap="gray")
        ax.set(title=f"{case['name']} back-projection A.T A x", xlabel="x (mm)", ylabel="y (mm)")
        fig.colorbar(im, ax=ax, shrink=0.8)

    ax = axes[1, 0]
    profile_angle = 30.0  # degrees
    for case, style in zip(cases, ("-", "--")):
        geo = case["geometry"]
        view = int(np.argmin(np.abs(np.degrees(geo.angles) - profile_angle)))
        u = (np.arange(geo.det_count) - (geo.det_count - 1) / 2) * float(geo.det_spacing[0])
        ax.plot(u, case["sino"][view], style, lw=1.5, label=f"{case['name']}: A x")
        ax.plot(u, case["exact"][view], ":", lw=1.5, color="k", label=f"{case['name']}: exact")
    ax.set(title=f"view t = {profile_angle:g} deg: A x against the exact line integrals",
           xlabel="detector position u (mm)", ylabel="line integral (value x mm)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def reconstruction_demo(device: torch.device, path: Path) -> None:
    """FBP and TV from a full (180 degrees) and a limited-angle (120 degrees) parallel scan."""
    volume = ko.Volume(shape=(128, 128), spacing=2.0)
    truth = phantoms.shepp_logan(volume, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for degrees in (180, 120):
        geo = ko.ParallelBeam2D(ko.uniform_angles(degrees, math.radians(degrees)), det_count=185, det_spacing=2.0)
        y = phantoms.shepp_logan_projections(geo, volume=volume, dtype=torch.float64)
        y = (y + 0.01 * y.abs().mean() * torch.randn(y.shape, generator=gen, dtype=torch.float64)).to(device)
        A = ko.RayTransform(volume, geo).to(device)
        fbp = recon.fbp(y.cpu(), volume, geo, filter="hann", cutoff=0.8)  # the voxel-driven pair is CPU-only so far
        tv = recon.tv_pdhg(A, y, lam=3.0, n_iter=200, nonneg=True, precondition=True).cpu()
        rows.append((degrees, fbp, tv))
        print(f"parallel beam over {degrees} degrees, 1 % noise: PSNR FBP (Hann 0.8) "
              f"{float(recon.psnr(fbp, truth)):.2f} dB, TV (lam 3, 200 PDHG iterations) {float(recon.psnr(tv, truth)):.2f} dB")
    fig, axes = plt.subplots(2, 3, figsize=(12, 8), layout="constrained")
    ext = image_extent(volume)
    for row, (degrees, fbp, tv) in enumerate(rows):
        for col, (title, image) in enumerate((("phantom", truth), ("FBP, Hann 0.8", fbp), ("TV (PDHG)", tv))):
            ax = axes[row, col]
            ax.imshow(image.numpy(), origin="lower", extent=ext, cmap="gray", vmin=0.0, vmax=0.5)
            psnr = "" if col == 0 else f", PSNR {float(recon.psnr(image, truth)):.1f} dB"
            ax.set(title=f"{title}: {degrees} degrees{psnr}", xlabel="x (mm)", ylabel="y (mm)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"figure: {path}")


def learned_limited_angle_demo(path: Path, steps: int = 300) -> None:
    """A LearnedFBP (Wuerfl et al.: redundancy weights per view and column, learned from Parker's with an
    image-domain loss) trained for about a minute on random ellipses, beside FBP with Parker's weights and TV,
    on a 140-degree flat-detector fan scan (the set-up of benchmarks/limited_angle.py at 64 x 64 pixels of 2 mm,
    one view per 2 degrees). To fit the minute, the demo trains on 100 rasterised phantoms projected by the
    ray transform (data.source "images"); the experiment simulates exact sinograms of new phantoms every step.
    The test sinogram is exact (the phantom's analytic line integrals) plus 1 % noise."""
    import limited_angle as la
    from recon.training import fit, resolve_config

    s = {**la.SCALES["cpu"], "size": 64, "spacing": 2.0, "du": 4.0, "step_deg": 2.0}
    volume, geometry = la.volume_for(s), la.geometry_for(140, s)
    config = json.loads((la.CONFIGS / "limited_angle_learned_fbp.json").read_text())
    config.update(volume=volume.to_dict(), geometry=geometry.to_dict(), steps=steps, validate_every=steps, png=False,
                  checkpoint_every=steps)
    config["data"].update(source="images", validation={"shepp_logan": False, "random_ellipses": 4})
    config = resolve_config(config)
    model = recon.learned.LearnedFBP(volume, geometry, **config["model"]["params"])
    start = time.perf_counter()
    images = phantoms.random_ellipse_images(100, volume, generator=0, supersample=2)
    fit(model, config, output=None, progress=False, images=images)
    minutes = (time.perf_counter() - start) / 60

    _, x_test, y_test = la.test_set(volume, geometry, 0)
    truth, y = x_test[0].double(), y_test[:1]
    x_tune, y_tune = la.tuning_set(volume, geometry, 4)
    A = ko.RayTransform(volume, geometry)
    lam, _, _ = la.tune_tv_lam(A, x_tune, y_tune, [0.25, 1.0, 4.0], 100, [-0.5, 0.0, 0.5], 200)
    with torch.no_grad():
        images = {"FBP, Parker weights (Hann)": recon.FBP(volume, geometry, filter="hann")(y)[0].double(),
                  f"LearnedFBP ({steps} steps, {minutes:.1f} min)": model.eval()(y)[0].double(),
                  f"TV (lam {lam:.2g} tuned on ellipses)": la._tv_batch(A, y.double(), [lam], 200, nonneg=False)[0, 0]}
    print(f"fan beam over 140 degrees, 1 % noise, {volume.shape[0]} x {volume.shape[1]} pixels: learned weights "
          f"trained for {steps} steps in {minutes:.1f} min")
    for name, image in images.items():
        print(f"  {name}: PSNR {float(recon.psnr(image, truth)):.2f} dB, SSIM {float(recon.ssim(image, truth)):.3f}")
    parker = ko.parker_weights(geometry, reduced_scan=True).expand(geometry.shape)
    learned = la.weights_of(model).expand(geometry.shape)
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.6), layout="constrained")
    ext = image_extent(volume)
    for ax, (title, image) in zip(axes, (("phantom", truth), *images.items())):
        ax.imshow(image.numpy(), origin="lower", extent=ext, cmap="gray", vmin=0.0, vmax=0.5)
        psnr = "" if image is truth else f"\nPSNR {float(recon.psnr(image, truth)):.1f} dB"
        ax.set_title(title + psnr, fontsize=9)
        ax.axis("off")
    diff = (learned - parker).numpy()
    lim = float(np.abs(diff).max()) or 1.0
    im = axes[4].imshow(diff, origin="lower", aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[4].set(title="learned weights - Parker's (all 1 here)", xlabel="detector column", ylabel="view")
    fig.colorbar(im, ax=axes[4], shrink=0.8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"figure: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--output", type=Path, default=RESULTS / "demo.png", help="figure path")
    args = parser.parse_args()
    device = torch.device(args.device)

    volume = ko.Volume(shape=(256, 256), spacing=1.0)
    image = phantoms.shepp_logan(volume, modified=True)
    print(f"known-ops demo: torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads")
    print(f"volume: {volume!r}")

    parallel = ko.ParallelBeam2D(angles=ko.uniform_angles(180, math.pi), det_count=367, det_spacing=1.0)
    source_distance, detector_distance, det_spacing = 500.0, 500.0, 2.0
    fan = ko.FanBeam2D(
        angles=ko.uniform_angles(360, 2 * math.pi),
        source_distance=source_distance,
        detector_distance=detector_distance,
        det_count=fan_det_count(volume, source_distance, detector_distance, det_spacing),
        det_spacing=det_spacing,
        detector="flat",
    )

    x = image.to(device)
    cases = [run_case("parallel", volume, parallel, x, device), run_case("fan (flat)", volume, fan, x, device)]
    make_figure(volume, image.numpy(), cases, args.output)
    print(f"figure: {args.output}")
    reconstruction_demo(device, args.output.with_name(args.output.stem + "_recon.png"))
    learned_limited_angle_demo(args.output.with_name(args.output.stem + "_learned.png"))


if __name__ == "__main__":
    main()
