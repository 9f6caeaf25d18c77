"""Diagnostic plots (`ssl_hf.evaluation.plots`): valid PNGs, labels or none, subsampling, no global matplotlib state."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from ssl_hf.evaluation.diagnostics import effective_rank
from ssl_hf.evaluation.plots import (
    DPI,
    FIGSIZE,
    plot_diagnostics,
    plot_projection,
    plot_spectrum,
    subsample_indices,
)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHAPE = (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI), 4)  # (height, width, RGBA)


def _features(n=400, d=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(4, d, generator=gen)
    labels = torch.arange(n) % 4
    return centres[labels] + torch.randn(n, d, generator=gen), labels


def _assert_png(path):
    from matplotlib.image import imread

    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.shape == SHAPE
    assert image[..., :3].std() > 0  # something was drawn


def test_plot_spectrum_writes_a_png(tmp_path):
    features, _ = _features()
    path = plot_spectrum(features, tmp_path / "sub" / "spectrum.png", title="spectrum")
    assert path == tmp_path / "sub" / "spectrum.png"
    _assert_png(path)
    # rank-deficient and fully collapsed inputs: zero singular values are skipped, nothing raises
    _assert_png(plot_spectrum(torch.randn(50, 1) @ torch.randn(1, 8), tmp_path / "rank_one.png"))
    _assert_png(plot_spectrum(np.ones((10, 4), dtype=np.float32), tmp_path / "collapsed.png"))


@pytest.mark.parametrize(
    "labels",
    [
        pytest.param(None, id="no-labels"),
        pytest.param("tensor", id="int-tensor"),
        pytest.param("list", id="int-list"),
        pytest.param("names", id="strings"),
        pytest.param("float", id="float-colorbar"),
        pytest.param("many", id="many-classes-colorbar"),
    ],
)
def test_plot_projection_writes_a_png(tmp_path, labels):
    features, classes = _features()
    values = {
        None: None,
        "tensor": classes,
        "list": classes.tolist(),
        "names": [f"class {c}" for c in classes.tolist()],
        "float": classes.float() / 3,
        "many": torch.arange(len(classes)),  # 400 distinct integers: more than a legend can hold
    }[labels]
    _assert_png(plot_projection(features, values, tmp_path / "pca.png"))


def test_plot_projection_subsamples_and_is_deterministic(tmp_path):
    keep = subsample_indices(12_000, 5000)
    assert len(keep) == 5000
    assert len(set(keep.tolist())) == 5000
    assert torch.all(keep[1:] > keep[:-1])  # sorted, no repeats
    assert keep.max() < 12_000
    assert torch.equal(keep, subsample_indices(12_000, 5000))
    assert torch.equal(subsample_indices(30, 5000), torch.arange(30))  # small sets are kept whole
    features, labels = _features(n=600)
    first = plot_projection(features, labels, tmp_path / "a.png", max_points=100)
    second = plot_projection(features, labels, tmp_path / "b.png", max_points=100)
    assert first.read_bytes() == second.read_bytes()
    with pytest.raises(ValueError, match="only 'pca'"):
        plot_projection(features, labels, tmp_path / "c.png", method="tsne")
    with pytest.raises(ValueError, match="one value per row"):
        plot_projection(features, labels[:10], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_plot_diagnostics_names_and_effective_rank(tmp_path):
    features, labels = _features()
    paths = plot_diagnostics(features, labels, tmp_path / "plots", "vit_mae")
    assert paths == {
        "spectrum": tmp_path / "plots" / "vit_mae_spectrum.png",
        "projection": tmp_path / "plots" / "vit_mae_pca.png",
    }
    for path in paths.values():
        _assert_png(path)
    assert plot_diagnostics(features, None, tmp_path / "plots", "nolabels")["projection"].is_file()
    assert effective_rank(features) > 1  # the value the spectrum legend shows


def test_no_global_matplotlib_state_changes(tmp_path):
    """In a fresh interpreter: importing the module loads no matplotlib; plotting keeps the backend, loads no pyplot."""
    script = textwrap.dedent(
        f"""
        import sys
        import torch
        from ssl_hf.evaluation import plots
        assert "matplotlib" not in sys.modules, "matplotlib imported at import time"
        import matplotlib
        before = matplotlib.get_backend()
        assert before == "svg", before
        plots.plot_diagnostics(torch.randn(50, 8), torch.arange(50) % 3, {str(tmp_path)!r}, "run")
        assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
        assert matplotlib.get_backend() == before, matplotlib.get_backend()
        """
    )
    env = {**os.environ, "MPLBACKEND": "svg", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run_spectrum.png").read_bytes()[:8] == PNG_SIGNATURE
