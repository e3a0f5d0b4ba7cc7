"""The diagrams of chapter 4 draw, fit the page and name what the chapter's text names."""

import matplotlib
import pytest

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from mlcourse.diagrams import blackbox  # noqa: E402

DIAGRAMS = {
    "computation_graph": [r"f_\theta", r"\phi_i", r"\mathcal{D}_i^{tr}", r"\nabla_\theta"],
    "mann_memory": ["least used", "w^w_t", "w^r_t", "controller"],
    "attention_mask": ["pair tokens", "online queries", "D^{ts}"],
}


@pytest.mark.parametrize("name", DIAGRAMS)
def test_diagram_draws_within_the_page_with_legible_text(name):
    fig = getattr(blackbox, name)()
    assert isinstance(fig, Figure)
    width, height = fig.get_size_inches()
    assert width <= 7.0 and height <= 5.0 and fig.dpi == 100
    texts = [t for ax in fig.axes for t in ax.texts]
    assert texts and all(t.get_fontsize() >= 9 for t in texts)
    joined = " ".join(t.get_text() for t in texts)
    for word in DIAGRAMS[name]:
        assert word in joined, f"{name} does not show {word!r}"
    fig.canvas.draw()  # renders (mathtext included) without error
    matplotlib.pyplot.close(fig)


def test_mask_diagram_colours_exactly_what_the_transformer_lets_each_token_see():
    fig = blackbox.attention_mask(steps=3, queries=1)
    grey = [p for p in fig.axes[0].patches if p.get_facecolor()[:3] == matplotlib.colors.to_rgb("#f2f2f2")]
    # pairs: 3 × 4 cells, 6 seen (s' ≤ s); online queries: 3 × 4, 3 + 3 seen; one query: all 4 seen
    assert len(grey) == (12 - 6) + (12 - 6) + 0
    matplotlib.pyplot.close(fig)
