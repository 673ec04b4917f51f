"""The DET plot of an open-set evaluation: FNIR against FPIR, one curve per gallery size."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_det(curves: dict[int, dict[str, np.ndarray]], points: dict[int, dict], path: Path, title: str) -> None:
    """Write a PNG: single photos (dashed) and visits (solid) per gallery size, each with its operating point.

    :param curves: per gallery size, :func:`~kiosk.evaluation.rates.det_curve` output.
    :param points: per gallery size, ``{"single": Rates, "visit": Rates}`` at the operating point.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 6))
    floor = 1e-5
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (size, c) in enumerate(sorted(curves.items())):
        colour = colours[i % len(colours)]
        for kind, style in (("single", "--"), ("visit", "-")):
            x = np.maximum(c[f"{kind}_fpir"], floor)
            y = np.maximum(c[f"{kind}_fnir"], floor)
            ax.plot(x, y, style, color=colour, lw=1.4, label=f"N={size}: {'single photos' if kind == 'single' else 'visits'}")
            r = points[size][kind]
            ax.plot(max(r.fpir, floor), max(r.fnir, floor), "o" if kind == "visit" else "s", color=colour, ms=6,
                    mfc="white" if kind == "single" else colour)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(1e-3, 1)
    ax.set_xlabel("FPIR: strangers accepted as a resident")
    ax.set_ylabel("FNIR: residents not accepted as themselves")
    ax.set_title(f"Open-set DET: {title}\n(markers: the kiosk's operating point; x below {floor:g} drawn at {floor:g})",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
