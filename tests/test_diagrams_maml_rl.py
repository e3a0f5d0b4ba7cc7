"""The diagram of chapter 9 draws within the page, keeps its text legible and shows the five parts
of a meta-iteration of MAML-RL that the chapter names."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mlcourse.diagrams import maml_rl  # noqa: E402

PARTS = ["sample tasks", "roll out", "adapt", "meta-update (TRPO)", r"\mathcal{D}_i^{tr}", r"\mathcal{D}_i^{ts}",
         r"\phi_i = \theta + \alpha", r"\delta", "depend on θ"]


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_rl_loop_draws_within_the_page_with_legible_text(first_order):
    fig = maml_rl.meta_rl_loop(first_order=first_order)
    try:
        assert isinstance(fig, Figure)
        width, height = fig.get_size_inches()
        assert width <= 7.0 and height <= 4.0 and fig.dpi <= 100
        texts = [t for ax in fig.axes for t in ax.texts]
        assert texts and all(t.get_fontsize() >= 9 for t in texts)
        words = " ".join(t.get_text() for t in texts)
        for part in PARTS:
            assert part in words, f"the loop does not show {part!r}"
        assert ("first order" in words) == first_order and ("DiCE" in words) != first_order
        fig.canvas.draw()  # every label renders (mathtext included)
        renderer = fig.canvas.get_renderer()
        for t in texts:
            if t.get_text().strip():
                extent = t.get_window_extent(renderer)
                assert extent.x0 >= fig.bbox.x0 - 1 and extent.x1 <= fig.bbox.x1 + 1, f"{t.get_text()!r} leaves the page"
    finally:
        plt.close(fig)


def test_each_of_the_five_steps_is_labelled_once():
    fig = maml_rl.meta_rl_loop()
    try:
        words = " ".join(t.get_text() for t in fig.axes[0].texts)
        for k in range(1, 6):
            assert words.count(f"{k}. ") == 1, f"step {k} is not labelled exactly once"
    finally:
        plt.close(fig)
