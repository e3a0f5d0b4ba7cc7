"""Every figure of the built book is numbered and captioned: in each chapter page, every image
a reader sees (other than an animation's frames and the page's logos) sits in a figure with a
caption that starts with its number.

Run by `make browser` after the quick book is built; MLCOURSE_BOOK_HTML names the HTML folder.
"""

import os
from pathlib import Path

import pytest

from test_book_text import NOT_YET

pytestmark = pytest.mark.browser

BOOK = Path(os.environ.get("MLCOURSE_BOOK_HTML", "_build/html"))
PAGES = sorted(BOOK.glob("chapters/*.html"))


def unnumbered_images(html: str) -> list[str]:
    """The images of a page that are not in a numbered, captioned figure."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    main = soup.find("main") or soup
    problems = []
    for img in main.find_all("img"):
        if img.find_parent(class_="animation") or img.find_parent(id=lambda i: bool(i) and i.startswith("_anim")):
            continue  # the frames of an animation player
        if "logo" in " ".join(img.get("class", [])) or img.find_parent(class_="btn"):
            continue  # the page's logos and the icons of its buttons (the Colab launch button)
        figure = img.find_parent("figure")
        caption = figure.find("figcaption") if figure else None
        number = caption.find(class_="caption-number") if caption else None
        text = caption.get_text(" ", strip=True) if caption else ""
        if number is None or len(text.split()) < 6:
            problems.append(str(img)[:120])
    return problems


def test_the_checker_knows_a_numbered_figure():
    good = ('<main><figure><img src="a.png"/><figcaption><p><span class="caption-number">Fig. 3 </span>'
            '<span class="caption-text">MAML adapts in one step while the baseline does not.</span></p>'
            '</figcaption></figure></main>')
    assert not unnumbered_images(good)
    assert unnumbered_images('<main><div class="cell_output"><img src="b.png"/></div></main>')


@pytest.mark.parametrize("page", [pytest.param(p, marks=pytest.mark.xfail(strict=True, reason="not yet"))
                                  if p.stem in NOT_YET else p for p in PAGES], ids=lambda p: p.stem)
def test_every_figure_has_a_number_and_a_caption(page):
    problems = unnumbered_images(page.read_text())
    assert not problems, f"{page.name}: images outside a numbered, captioned figure:\n  " + "\n  ".join(problems)


def quoted_glue(html: str) -> list[str]:
    """Glued values shown with the quotes of a Python string's repr (a str glued as itself)."""
    from bs4 import BeautifulSoup

    spans = BeautifulSoup(html, "html.parser").select("span.output.text_plain")
    return [s.get_text() for s in spans if s.get_text()[:1] in "'\"‘“" and s.get_text()[-1:] in "'\"’”"]


def test_the_checker_knows_a_quoted_glue():
    assert quoted_glue('<span class="output text_plain">‘3 of the 4’</span>') == ["‘3 of the 4’"]
    assert quoted_glue('<span class="output text_plain">0.041</span>') == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_no_glued_value_shows_quotes(page):
    assert quoted_glue(page.read_text()) == []
