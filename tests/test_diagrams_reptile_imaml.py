"""The Reptile and iMAML diagrams draw, fit the page and say what they show."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mlcourse.diagrams import imaml, reptile  # noqa: E402


@pytest.mark.parametrize("draw,words", [
    (reptile.reptile_update, ["\\theta", "\\phi_1", "\\phi_3", "\\beta", "SGD steps"]),
    (imaml.unrolled_vs_implicit, ["unrolled", "\\phi^\\star", "CG", "\\lambda", "memory"]),
])
def test_diagram_draws_within_the_page_with_its_labels(draw, words, tmp_path):
    fig = draw()
    assert isinstance(fig, Figure)
    width, height = fig.get_size_inches()
    assert width <= 7.0 and height <= 5.0 and fig.dpi <= 100
    texts = [t for ax in fig.axes for t in ax.texts]
    shown = " ".join(t.get_text() for t in texts)
    for word in words:
        assert word in shown, f"{draw.__name__}: no label with {word!r}"
    assert min(t.get_fontsize() for t in texts) >= 9
    fig.savefig(tmp_path / "d.png")       # renders (mathtext parses)
    plt.close(fig)


def test_reptile_diagram_update_is_a_fraction_of_the_mean_direction():
    fig = reptile.reptile_update(beta=0.25)
    ax = fig.axes[0]
    arrows = [a for a in ax.texts if a.get_text() == "" and hasattr(a, "xy")]
    theta_arrow = arrows[-1]                      # the last annotation is θ's update
    start, end = theta_arrow.xyann, theta_arrow.xy
    phis = [a.xy for a in arrows[:-1]]
    mean = [sum(p[i] for p in phis) / len(phis) for i in range(2)]
    for i in range(2):
        assert abs(end[i] - (start[i] + 0.25 * (mean[i] - start[i]))) < 1e-9
    plt.close(fig)
