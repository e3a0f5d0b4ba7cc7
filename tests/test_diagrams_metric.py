"""The metric-based diagrams draw, fit the page, say what they show, and draw what they claim:
prototypes at the class means and straight decision borders for squared-Euclidean distance."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mlcourse.diagrams import metric  # noqa: E402

EXPECTED = {
    "prototypical": [r"\mathcal{D}^{tr}", r"f_\theta", "c_0", "query", "embedding space", "mean of class"],
    "linear_view": ["w_k = 2 c_k", r"b_k = -\Vert c_k \Vert^2", "softmax"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_diagram_draws_within_the_page_with_legible_text(name):
    fig = getattr(metric, name)()
    try:
        assert isinstance(fig, Figure)
        width, height = fig.get_size_inches()
        assert width <= 7.0 and height <= 4.0 and fig.dpi <= 100
        texts = [t for ax in fig.axes for t in ax.texts]
        assert texts and all(t.get_fontsize() >= 9 for t in texts)
        words = " ".join(t.get_text() for t in texts)
        for expected in EXPECTED[name]:
            assert expected in words, f"{name}: no {expected!r} in {words[:200]}"
        fig.canvas.draw()    # every label renders (mathtext included)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("ways,shots", [(2, 1), (3, 3), (3, 5)])
def test_prototypes_are_the_means_of_the_drawn_support_points(ways, shots):
    fig = metric.prototypical(ways=ways, shots=shots)
    try:
        ax = fig.axes[0]
        collections = [c for c in ax.collections if isinstance(c, PathCollection)]   # the scatters
        points = [c.get_offsets() for c in collections if len(c.get_offsets()) == shots and c.get_sizes()[0] < 100]
        stars = [c.get_offsets()[0] for c in collections if len(c.get_offsets()) == 1 and c.get_sizes()[0] > 150]
        assert len(stars) == ways
        for star in stars:   # every star is the mean of one class's points
            assert any(np.allclose(np.asarray(p).mean(0), star) for p in points)
        labels = {t.get_text() for t in ax.texts}
        assert {f"$c_{k}$" for k in range(ways)} <= labels and f"$c_{ways}$" not in labels
    finally:
        plt.close(fig)


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="ways must be between 2 and 3"):
        metric.prototypical(ways=7)
    with pytest.raises(ValueError, match="shots must be between 1 and 5"):
        metric.prototypical(shots=0)
