"""The MAML-family diagrams draw, fit the page and say what they show."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mlcourse.diagrams import maml_family  # noqa: E402

EXPECTED = {
    "meta_sgd": [r"\alpha", r"\odot"],
    "cavia": ["c_i", "inner loop", "outer loop"],
    "mamlpp": ["BN", "w_1", r"\sum_j"],
    "anil": ["trunk", "head", "inner", "outer"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_diagram_draws_within_the_page_with_legible_text(name):
    fig = getattr(maml_family, name)()
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


def test_mamlpp_draws_as_many_steps_as_asked():
    fig = maml_family.mamlpp(steps=4)
    try:
        words = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
        assert r"\phi_4" in words and r"\phi_5" not in words
    finally:
        plt.close(fig)
