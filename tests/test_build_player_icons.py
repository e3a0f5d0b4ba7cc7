"""The animation player's buttons carry their own icons, so that they show without Font Awesome
(which the book does not load: it works offline) and without fonts that have media symbols."""

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import animation as mpl_animation  # noqa: E402

from mlcourse import plots  # noqa: E402


def _player_html():
    fig, ax = plt.subplots()
    (line,) = ax.plot([0, 1], [0, 1])
    anim = mpl_animation.FuncAnimation(fig, lambda i: (line.set_data([0, i], [0, i]), (line,))[1], frames=3)
    plt.close(fig)
    return plots.animation(anim).data


def test_every_button_draws_an_svg_icon():
    html = _player_html()
    buttons = re.findall(r"<button[^>]*>(.*?)</button>", html, re.S)
    assert len(buttons) == 9, f"matplotlib's player has 9 buttons, found {len(buttons)}"
    for inner in buttons:
        assert re.fullmatch(r'\s*<svg class="mlcourse-icon"[^>]*><path fill="currentColor" d="[^"]+"/></svg>\s*',
                            inner), f"a button without a drawn icon: {inner!r}"
    assert "font-awesome" not in html and '<i class="fa' not in html


def test_icons_differ():
    paths = [path for _, path in plots._ICON_PATHS.values()]
    assert len(set(paths)) == len(paths)
