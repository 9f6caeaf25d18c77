"""PNG plots of an embedding matrix: its singular-value spectrum and a 2-D PCA projection coloured by label.

matplotlib is imported inside the functions, so `import ssl_hf` never loads it. The figures are plain
`matplotlib.figure.Figure` objects rendered by the Agg canvas that `savefig` picks for PNG: pyplot is never imported,
so the global backend, pyplot's figure registry and interactive state are left alone and there is no figure to close.
"""

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .diagnostics import _as_matrix, _spectrum_effective_rank, singular_values


FIGSIZE = (5.0, 4.0)
DPI = 100
MAX_POINTS = 5000
MAX_LEGEND_CLASSES = 20  # integer labels with more distinct values get a colorbar instead of a legend


def plot_spectrum(features: Tensor | np.ndarray, path: str | os.PathLike, title: str | None = None) -> Path:
    """Plots the normalised singular values `s_k / sum(s)` of the centred features against `k` (log scale).

    The spectrum is `ssl_hf.evaluation.diagnostics.singular_values`, the one `effective_rank` uses, and the legend
    gives that effective rank. Zero singular values (beyond the rank) cannot be drawn on a log axis and are left out.

    Args:
        features: `(N, d)` embeddings.
        path: Output PNG file; its folder is created.
        title: Figure title.

    Returns:
        `path` as a `Path`.
    """
    from matplotlib.figure import Figure

    singular = singular_values(torch.as_tensor(features)).cpu()
    rank = _spectrum_effective_rank(singular)
    total = singular.sum().item()
    share = (singular / total).double().numpy() if total > 0 else np.zeros(len(singular))
    index = np.arange(1, len(share) + 1)
    positive = share > 0
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(
        index[positive], share[positive], marker=".", markersize=3, linewidth=1, label=f"effective rank {rank:.1f}"
    )
    ax.set_yscale("log")
    ax.set_xlabel("index k")
    ax.set_ylabel("normalised singular value  $s_k / \\sum s$")
    ax.set_title(title or f"Spectrum of {len(singular)} singular values", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right")
    return _save(fig, path)


def plot_projection(
    features: Tensor | np.ndarray,
    labels: Tensor | np.ndarray | Sequence | None,
    path: str | os.PathLike,
    title: str | None = None,
    method: str = "pca",
    max_points: int = MAX_POINTS,
) -> Path:
    """Scatter plot of the L2-normalised features projected on their first two principal components.

    The PCA is fitted on every feature (eigenvectors of the `d x d` covariance of the normalised, centred rows); at
    most `max_points` of them are drawn, a fixed random subset (seed 0) so the output is deterministic. Each
    component's sign is fixed (largest loading positive) and the axis labels give its share of the variance.
    Non-float labels (integers, booleans, strings) with at most 20 distinct values get one colour per class and a
    legend; other labels (floats, more classes) a continuous colour map and a colorbar; without labels every point
    has one colour.

    Args:
        features: `(N, d)` embeddings, `N >= 2`.
        labels: `(N,)` label per row, or None.
        path: Output PNG file; its folder is created.
        title: Figure title.
        method: Projection; only `"pca"` is available.
        max_points: Most points drawn.

    Returns:
        `path` as a `Path`.

    Raises:
        ValueError: For another `method`, a `max_points` below 1, or labels that are not one value per row.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if method != "pca":
        raise ValueError(f"Unknown projection method '{method}'; only 'pca' is available.")
    if max_points < 1:
        raise ValueError(f"`max_points` must be >= 1, got {max_points}.")
    z = F.normalize(_as_matrix(torch.as_tensor(features), "features", min_rows=2).cpu(), dim=1).double()
    y = None
    if labels is not None:
        y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
        if y.shape != (len(z),):
            raise ValueError(f"`labels` must hold one value per row: shape ({len(z)},), got {y.shape}.")
    z = z - z.mean(dim=0)
    variance, vectors = torch.linalg.eigh(z.T @ z / len(z))  # ascending eigenvalues
    components = vectors[:, -2:].flip(1)  # (d, 2): first and second principal axes
    components = components * torch.sign(components.gather(0, components.abs().argmax(0, keepdim=True)))
    ratio = (variance[-2:].flip(0) / variance.sum().clamp_min(1e-30)).tolist()
    keep = subsample_indices(len(z), max_points)
    xy = (z[keep] @ components).numpy()

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    style = {"s": 4, "alpha": 0.7, "linewidths": 0}
    if y is None:
        ax.scatter(xy[:, 0], xy[:, 1], **style)
    else:
        y = y[keep.numpy()]
        classes = np.unique(y)
        if not np.issubdtype(y.dtype, np.floating) and len(classes) <= MAX_LEGEND_CLASSES:
            from matplotlib import colormaps

            cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
            colours = [cmap(i) for i in range(len(classes))]
            index = np.searchsorted(classes, y)
            ax.scatter(xy[:, 0], xy[:, 1], c=[colours[i] for i in index], **style)  # one call: no class on top
            handles = [
                Line2D([], [], linestyle="", marker="o", markersize=4, color=colour, label=str(c))
                for c, colour in zip(classes.tolist(), colours)
            ]
            fig.legend(handles=handles, loc="outside right upper", title="label", fontsize=8, title_fontsize=8)
        else:
            numeric = np.issubdtype(y.dtype, np.number) or y.dtype == bool
            values = y.astype(float) if numeric else np.searchsorted(classes, y).astype(float)  # e.g. many names
            points = ax.scatter(xy[:, 0], xy[:, 1], c=values, cmap="viridis", **style)
            fig.colorbar(points, ax=ax, label="label" if numeric else "label (index in sorted order)")
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}% of variance)")
    shown = f"{len(keep)} of {len(z)}" if len(keep) < len(z) else f"{len(z)}"
    ax.set_title(title or f"PCA of {shown} L2-normalised features", fontsize=10)
    return _save(fig, path)


def plot_diagnostics(
    features: Tensor | np.ndarray,
    labels: Tensor | np.ndarray | Sequence | None,
    output_dir: str | os.PathLike,
    prefix: str,
) -> dict[str, Path]:
    """Writes `{prefix}_spectrum.png` (`plot_spectrum`) and `{prefix}_pca.png` (`plot_projection`) to `output_dir`.

    Args:
        features: `(N, d)` embeddings, `N >= 2`.
        labels: `(N,)` label per row, or None.
        output_dir: Output folder; created if missing.
        prefix: File-name prefix, also used in the titles (e.g. the run or model name).

    Returns:
        The two paths, under the keys `spectrum` and `projection`.
    """
    output_dir = Path(output_dir)
    return {
        "spectrum": plot_spectrum(features, output_dir / f"{prefix}_spectrum.png", title=f"{prefix}: spectrum"),
        "projection": plot_projection(features, labels, output_dir / f"{prefix}_pca.png", title=f"{prefix}: PCA"),
    }


def subsample_indices(n: int, max_points: int, seed: int = 0) -> Tensor:
    """Sorted indices of a fixed random subset of `min(n, max_points)` of `range(n)` (all of them when `n` fits)."""
    if n <= max_points:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points].sort().values


def _save(fig, path: str | os.PathLike) -> Path:
    """Saves `fig` as PNG at `path` (creating its folder) and frees the figure's artists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    fig.clear()
    return path
