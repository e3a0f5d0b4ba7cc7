"""The MAML diagrams draw what their captions say: θ and one optimum per task, the two loops, and
the meta-gradient's paths (the second-order ones cut for first-order MAML)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mlcourse.diagrams import maml  # noqa: E402


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


@pytest.mark.parametrize("tasks", [1, 3, 5])
def test_geometry_has_theta_and_one_optimum_per_task(tasks):
    fig = maml.geometry(tasks)
    texts = _texts(fig)
    assert isinstance(fig, Figure) and r"$\theta$" in texts
    assert sorted(t for t in texts if t.startswith(r"$\phi_")) == sorted(rf"$\phi_{i}^*$" for i in range(1, tasks + 1))
    assert sum(r"\nabla \mathcal{L}" in t for t in texts) == tasks
    plt.close(fig)


def test_bilevel_loop_names_both_loops_and_both_sets():
    fig = maml.bilevel_loop()
    text = " ".join(_texts(fig))
    for part in ("inner loop", "outer loop", r"\mathcal{D}_i^{tr}", r"\mathcal{D}_i^{ts}", r"\beta", r"\alpha"):
        assert part in text
    assert fig.get_size_inches()[0] <= 7
    plt.close(fig)


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_meta_gradient_graph_shows_the_second_order_path_of_every_step(steps):
    fig = maml.meta_gradient_graph(steps)
    texts = _texts(fig)
    assert [t for t in texts if "H^" in t and "nabla" not in t] == [rf"$-\alpha H^{{({j})}}$" for j in range(steps)]
    assert sum(t.startswith("$g^") for t in texts) == steps
    formula = next(t for t in texts if r"\nabla_\theta" in t)
    # The transpose of the Jacobian: H^(0) first, H^(k-1) next to the query gradient.
    assert formula.index("H^{(0)}") < formula.index(f"H^{{({steps - 1})}}") or steps == 1
    plt.close(fig)


def test_first_order_graph_cuts_every_second_order_path():
    full, first = maml.meta_gradient_graph(3), maml.meta_gradient_graph(3, first_order=True)
    assert not [t for t in _texts(first) if t.startswith(r"$-\alpha H")]
    crosses = len(first.axes[0].lines) - len(full.axes[0].lines)
    assert crosses == 2 * 3                                 # two strokes of a cross per inner step
    assert any("first-order" in t for t in _texts(first))
    plt.close("all")


@pytest.mark.parametrize("call,message", [
    (lambda: maml.geometry(0), "tasks must be 1..5"),
    (lambda: maml.meta_gradient_graph(5), "steps must be 1..4"),
])
def test_diagrams_refuse_what_does_not_fit(call, message):
    with pytest.raises(ValueError, match=message):
        call()
