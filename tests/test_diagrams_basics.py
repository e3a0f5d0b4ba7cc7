"""The diagrams of the first three chapters (tasks, multi-task learning, transfer learning) draw,
fit the page, keep their text legible and say what they show."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mlcourse.diagrams import multitask, tasks, transfer  # noqa: E402

EXPECTED = {
    (tasks, "meta_learning_tasks"): [r"p(\mathcal{T})", r"\mathcal{D}_1^{tr}", r"\mathrm{Alg}", "meta-test"],
    (tasks, "episode"): ["pick N = 5", "K = 2", "Q = 2", "shuffles"],
    (multitask, "hard_sharing"): [r"\theta_{sh}", r"\theta_1", r"\theta_M", r"\sum_i w_i"],
    (multitask, "sharing_variants"): ["one network", "hard sharing", "task-conditioned", "z_i"],
    (transfer, "pipeline"): ["source", "target", r"\theta_{\text{pretrained}}", "N-way head", r"\mathcal{D}^{ts}"],
}


@pytest.mark.parametrize("module, name", sorted(EXPECTED, key=lambda k: (k[0].__name__, k[1])),
                         ids=lambda v: v if isinstance(v, str) else v.__name__.split(".")[-1])
def test_diagram_draws_within_the_page_with_legible_text(module, name):
    fig = getattr(module, name)()
    try:
        assert isinstance(fig, Figure)
        width, height = fig.get_size_inches()
        assert width <= 7.0 and height <= 4.0 and fig.dpi <= 100
        texts = [t for ax in fig.axes for t in ax.texts]
        assert texts and all(t.get_fontsize() >= 9 for t in texts)
        words = " ".join(t.get_text() for t in texts)
        for expected in EXPECTED[module, name]:
            assert expected in words, f"{name}: no {expected!r} in {words[:300]}"
        fig.canvas.draw()    # every label renders (mathtext included)
        renderer = fig.canvas.get_renderer()
        page = fig.bbox
        for t in texts:      # no label is cut off at the figure's edge
            box = t.get_window_extent(renderer)
            if t.get_text().strip():
                assert box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1, f"{name}: {t.get_text()!r} leaves the page"
    finally:
        plt.close(fig)


def test_episode_diagram_draws_the_asked_shape():
    fig = tasks.episode(ways=4, shots=3, queries=1)
    try:
        cells = [p for p in fig.axes[0].patches if type(p).__name__ == "Rectangle"]
        assert len(cells) == 4 * (3 + 1)
        words = " ".join(t.get_text() for t in fig.axes[0].texts)
        assert "K = 3" in words and "Q = 1" in words and "pick N = 4" in words
    finally:
        plt.close(fig)


def test_hard_sharing_draws_as_many_heads_as_asked():
    fig = multitask.hard_sharing(tasks=4)
    try:
        words = " ".join(t.get_text() for t in fig.axes[0].texts)
        assert r"\mathcal{L}_1" in words and r"\mathcal{L}_M" in words
        assert words.count(r"\theta_") >= 4
    finally:
        plt.close(fig)
