import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib import animation as mpl_animation  # noqa: E402

from mlcourse import plots  # noqa: E402
from mlcourse.tasks import EpisodeSampler  # noqa: E402


def test_animation_html_plays_offline():
    fig, ax = plt.subplots()
    (line,) = ax.plot([], [])
    anim = mpl_animation.FuncAnimation(fig, lambda i: (line.set_data([0, i], [0, i]), (line,))[1], frames=3)
    plt.close(fig)
    html = plots.animation(anim).data
    assert "<script" in html and "frames" in html
    assert "http://" not in html and "https://" not in html, "the player must not load anything from the network"
    assert 'class="fa ' not in html and "▶" in html


def test_band_draws_mean_and_interval():
    fig, ax = plt.subplots()
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    line = plots.band(ax, [0, 1], values, label="x")
    assert list(line.get_ydata()) == [3.0, 4.0]
    assert len(ax.collections) == 1
    plt.close(fig)


def test_episode_figure_has_one_column_per_class():
    images = torch.randint(0, 255, (6, 20, 8, 8), dtype=torch.uint8)
    batch = EpisodeSampler(images, ways=3, shots=2, queries=4, device="cpu").sample(2)
    fig = plots.show_episode(batch, 1)
    assert len(fig.axes) == 3 * (2 + 3)   # K rows of D^tr and at most 3 rows of D^ts, N columns
    plt.close(fig)
    fig = plots.image_grid(images[:5, 0], titles=list("abcde"), ncols=3)
    assert len(fig.axes) == 6
    plt.close(fig)
