"""Draws docs/conventions.png: the axes, pixel indices and geometry vectors of known-ops.

    python docs/make_figures.py [--output docs/conventions.png]

Left: a parallel-beam view; right: a fan-beam view (flat detector, with the
curved detector of the same view dashed). Both at the view angle t = 30 degrees,
with the vectors exactly as the circular constructors define them
(docs/conventions.md): the drawing computes them from those formulas.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Arc, Rectangle  # noqa: E402

HERE = Path(__file__).resolve().parent

# A small image: ny x nx pixels of 1 mm, centred at the origin.
NY, NX = 4, 5
T = math.radians(30.0)  # view angle of both drawings
DU = 1.0  # detector pixel step (mm)

RAY_COLOR = "0.6"
DET_COLOR = "tab:blue"
VEC_COLOR = "tab:red"
SRC_COLOR = "tab:orange"


def pixel_centre(i: int, j: int) -> tuple[float, float]:
    """x = (j - (nx-1)/2) sx + ox, y = (i - (ny-1)/2) sy + oy with 1 mm pixels and no offset."""
    return (j - (NX - 1) / 2, i - (NY - 1) / 2)


def draw_grid(ax) -> None:
    for i in range(NY):
        for j in range(NX):
            x, y = pixel_centre(i, j)
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=True, fc="0.96", ec="0.35", lw=0.8, zorder=1))
            ax.text(x, y, f"({i}, {j})", ha="center", va="center", fontsize=7.5, zorder=2)
    ax.text(NX / 2 + 0.15, -NY / 2, "row i grows with y,\ncolumn j with x", fontsize=8, va="bottom", color="0.25")


def draw_axes(ax, length: float) -> None:
    for dx, dy, label in ((length, 0.0, "x (mm)"), (0.0, length, "y (mm)")):
        ax.annotate("", xy=(dx, dy), xytext=(0, 0),
                    arrowprops=dict(arrowstyle="-|>", color="k", lw=1.4, mutation_scale=14), zorder=5)
        ax.text(dx + (0.2 if dx else 0.15), dy + (0.2 if dy else -0.45), label, fontsize=10, zorder=5)
    ax.plot([0], [0], "ko", ms=3, zorder=5)


def arrow(ax, start, vec, color, label, label_offset=(0.1, 0.1), lw=2.0) -> None:
    start = np.asarray(start, dtype=float)
    end = start + np.asarray(vec, dtype=float)
    ax.annotate("", xy=end, xytext=start,
                arrowprops=dict(arrowstyle="-|>", color=color, lw=lw, mutation_scale=16), zorder=6)
    ax.text(end[0] + label_offset[0], end[1] + label_offset[1], label, color=color, fontsize=11,
            fontweight="bold", zorder=6)


def draw_angle(ax, radius: float, direction_label: str) -> None:
    """The view angle t: from the -y axis, counter-clockwise, to (sin t, -cos t)."""
    ax.plot([0, 0], [0, -radius * 1.5], color="k", ls=":", lw=1, zorder=3)
    ax.plot([0, radius * 1.5 * math.sin(T)], [0, -radius * 1.5 * math.cos(T)], color="k", ls=":", lw=1, zorder=3)
    ax.add_patch(Arc((0, 0), 2 * radius, 2 * radius, theta1=-90, theta2=-90 + math.degrees(T), color="k", lw=1.3,
                     zorder=3))
    mid = -math.pi / 2 + T / 2
    ax.text(1.12 * radius * math.cos(mid), 1.12 * radius * math.sin(mid) - 0.15, "t", fontsize=13, style="italic",
            fontweight="bold")
    ax.text(radius * 1.5 * math.sin(T) + 0.15, -radius * 1.5 * math.cos(T) - 0.2, direction_label, fontsize=9)
    ax.text(0.1, -radius * 1.5, "-y", fontsize=9, va="top")


def draw_detector(ax, centre, u, n: int, *, label_side: float = 1.0) -> np.ndarray:
    """Flat detector of n bins: bin c centre = centre + (c - (n-1)/2) u. Returns the bin centres."""
    centre, u = np.asarray(centre, float), np.asarray(u, float)
    offsets = np.arange(n) - (n - 1) / 2
    bins = centre + offsets[:, None] * u
    edges = centre + (np.arange(n + 1) - n / 2)[:, None] * u
    ax.plot(edges[[0, -1], 0], edges[[0, -1], 1], color=DET_COLOR, lw=5, solid_capstyle="butt", alpha=0.35,
            zorder=4)
    normal = np.array([-u[1], u[0]]) / np.hypot(*u)
    for e in edges:
        a, b = e - 0.18 * normal, e + 0.18 * normal
        ax.plot([a[0], b[0]], [a[1], b[1]], color=DET_COLOR, lw=1, zorder=4)
    for c, text in ((0, "bin 0"), (n - 1, f"bin n-1 = {n - 1}")):
        p = bins[c] + label_side * 0.55 * normal
        ax.text(p[0], p[1], text, color=DET_COLOR, fontsize=9, ha="center", va="center", rotation=math.degrees(T),
                zorder=6)
    return bins


def parallel_panel(ax) -> None:
    ax.set_title("ParallelBeam2D, view t = 30 deg\n"
                 "r = (sin t, -cos t),  d = det_offset (cos t, sin t),  u = det_spacing (cos t, sin t)", fontsize=10)
    draw_grid(ax)
    draw_axes(ax, 4.2)
    r = np.array([math.sin(T), -math.cos(T)])
    u = DU * np.array([math.cos(T), math.sin(T)])
    n = 7
    d = np.zeros(2)  # det_offset = 0
    # Only the detector's position across the rays matters; it is drawn moved along r, past the image.
    shown_centre = d + 6.0 * r
    bins = draw_detector(ax, shown_centre, u, n, label_side=-1.0)
    for b in bins:
        start = b - 11.0 * r
        ax.plot([start[0], b[0]], [start[1], b[1]], color=RAY_COLOR, lw=0.8, zorder=2.5)
    arrow(ax, bins[0] - 9.5 * r, 1.6 * r, VEC_COLOR, "r", label_offset=(-0.45, -0.2))
    ax.plot([d[0], shown_centre[0]], [d[1], shown_centre[1]], color=DET_COLOR, ls="--", lw=1, zorder=3)
    ax.plot(*d, "o", color=DET_COLOR, ms=5, zorder=6)
    ax.text(d[0] - 0.45, d[1] + 0.15, "d", color=DET_COLOR, fontsize=11, fontweight="bold", zorder=6,
            bbox=dict(fc="white", ec="none", pad=0.5))
    ax.plot(*shown_centre, "o", color=DET_COLOR, ms=5, zorder=6)
    ax.text(shown_centre[0] + 0.25, shown_centre[1] - 0.55, "detector centre d\n(drawn moved along r)",
            color=DET_COLOR, fontsize=8, zorder=6)
    arrow(ax, shown_centre, u, VEC_COLOR, "u", label_offset=(0.05, 0.25))
    draw_angle(ax, 2.6, "r")
    ax.text(-7.6, 6.4, "detector coordinate of (x, y): x cos t + y sin t\n"
            "bin c centre: d + (c - (n-1)/2) u", fontsize=9, va="top",
            bbox=dict(fc="white", ec="0.7"))
    ax.set(xlim=(-7.8, 7.8), ylim=(-8.2, 6.8))


def fan_panel(ax) -> None:
    d_so, d_od = 8.0, 4.0
    ax.set_title("FanBeam2D, view t = 30 deg, D_so = source_distance, D_od = detector_distance\n"
                 "s = D_so (sin t, -cos t),  d = D_od (-sin t, cos t),  u = det_spacing (cos t, sin t)", fontsize=10)
    draw_grid(ax)
    draw_axes(ax, 4.2)
    s = d_so * np.array([math.sin(T), -math.cos(T)])
    d = d_od * np.array([-math.sin(T), math.cos(T)])
    u = DU * np.array([math.cos(T), math.sin(T)])
    n = 11
    bins = draw_detector(ax, d, u, n)
    for b in bins:
        ax.plot([s[0], b[0]], [s[1], b[1]], color=RAY_COLOR, lw=0.8, zorder=2.5)
    # Curved (equiangular) detector of the same view: an arc of radius D_so + D_od about s through d,
    # bins spaced by the arc length det_spacing.
    radius = d_so + d_od
    axis_angle = math.atan2(d[1] - s[1], d[0] - s[0])
    half = (n / 2) * DU / radius
    phis = np.linspace(axis_angle - half, axis_angle + half, 100)
    ax.plot(s[0] + radius * np.cos(phis), s[1] + radius * np.sin(phis), color="tab:green", ls="--", lw=1.5,
            zorder=3.5)
    end = s + radius * np.array([math.cos(axis_angle + half), math.sin(axis_angle + half)])
    ax.text(end[0] + 0.3, end[1] - 0.4, "curved detector:\narc about s of radius\nD_so + D_od; det_spacing\n= arc length of a bin",
            color="tab:green", fontsize=8.5, ha="right", va="top")
    ax.plot(*s, "*", color=SRC_COLOR, ms=16, zorder=6)
    ax.text(s[0] + 0.35, s[1] - 0.2, "source s", color=SRC_COLOR, fontsize=11, fontweight="bold")
    ax.plot(*d, "o", color=DET_COLOR, ms=5, zorder=6)
    ax.text(d[0] - 0.35, d[1] - 0.7, "d", color=DET_COLOR, fontsize=11, fontweight="bold", zorder=6)
    arrow(ax, d, u, VEC_COLOR, "u", label_offset=(0.0, 0.3))
    draw_angle(ax, 2.6, "s / |s|")
    ax.text(-9.3, -4.5, "bin c centre: d + (c - (n-1)/2) u\n"
            "rays: from s through each bin centre\n"
            "(ASTRA fanflat_vec: s, d, u)", fontsize=9, va="top", bbox=dict(fc="white", ec="0.7"))
    ax.set(xlim=(-9.5, 7.5), ylim=(-8.8, 9.2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=HERE / "conventions.png")
    args = parser.parse_args()
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 8), layout="constrained")
    parallel_panel(left)
    fan_panel(right)
    for ax in (left, right):
        ax.set_aspect("equal")
        ax.set_xlabel("x (mm)")
        ax.set_ylabel("y (mm)")
        ax.grid(alpha=0.15)
    fig.savefig(args.output, dpi=100, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
