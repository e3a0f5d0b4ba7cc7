"""The built book in a real browser, with no network: every page loads from a local server with
no failed request and no console error, math is typeset by the bundled MathJax, every image
loads, and embedded widgets render with the bundled widget JavaScript. On a 390-px phone the
navigation opens and nothing is cut off; the animation player's buttons show their icons.

Run by `make browser` after `make book-quick`; MLCOURSE_BOOK_HTML names the built HTML folder.
"""

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"]


BOOK = Path(os.environ.get("MLCOURSE_BOOK_HTML", "_build/html"))
PAGES = sorted(str(p.relative_to(BOOK)) for p in BOOK.rglob("*.html") if "_static" not in p.parts)


def _book() -> Path:
    if not (BOOK / "index.html").exists():
        pytest.fail(f"no built book in {BOOK}: run `make book-quick` first (or set MLCOURSE_BOOK_HTML)")
    return BOOK


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    html = _book()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(html)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if executable is None:
        pytest.fail("Chromium not found: `apt-get install chromium` (make browser does it when run as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def _check_page(browser, server, page_path):
    problems = []
    context = browser.new_context()
    host = urlparse(server).netloc

    def only_local(route):
        # Nothing may leave the machine: a request elsewhere is a failure of the offline book.
        if urlparse(route.request.url).netloc == host or route.request.url.startswith("data:"):
            route.continue_()
        else:
            problems.append(f"request to the network: {route.request.url}")
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and problems.append(f"console error: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url} ({r.failure})"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))
    page.goto(f"{server}/{page_path}", wait_until="networkidle")

    has_math = page.locator(".math, .MathJax, mjx-container").count() > 0
    if has_math:
        page.wait_for_function("window.MathJax && window.MathJax.startup && window.MathJax.startup.promise")
        page.evaluate("window.MathJax.startup.promise")
        typeset = page.locator("mjx-container").count()
        if typeset == 0:
            problems.append("math on the page but MathJax typeset nothing")
        if page.locator("mjx-merror").count():
            problems.append(f"MathJax errors: {page.locator('mjx-merror').first.inner_text()}")
    broken = page.evaluate(
        "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    problems += [f"image did not load: {src}" for src in broken]
    widget_views = page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
    if widget_views:
        try:
            page.wait_for_selector(".widget-slider, .jupyter-widgets", timeout=15_000)
        except Exception:
            problems.append(f"{widget_views} widget view(s) embedded but none rendered")
    images = page.evaluate("document.images.length")
    context.close()
    return problems, {"math": has_math, "images": images, "widgets": widget_views}


def _open(page, url):
    """Go to ``url`` and wait until its layout is final: every resource of the load event, then the
    math typeset (MathJax changes the widths) and any embedded widget drawn. The offline check
    waits for the network to be idle instead, to see late requests fail; the others need only the
    finished page."""
    page.goto(url, wait_until="load")
    page.evaluate("window.MathJax && window.MathJax.startup ? window.MathJax.startup.promise.then(() => true) : true")
    if page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count():
        page.wait_for_selector(".widget-slider, .jupyter-widgets", timeout=15_000)


def test_book_has_pages():
    _book()
    assert "book/intro.html" in PAGES and any(p.startswith("chapters/") for p in PAGES)


@pytest.mark.parametrize("page_path", PAGES)
def test_page_works_offline(browser, server, page_path):
    problems, seen = _check_page(browser, server, page_path)
    assert not problems, f"{page_path}: " + "; ".join(problems)
    if page_path.startswith("chapters/"):
        assert seen["math"] and seen["images"] > 0, f"{page_path}: a chapter should show math and figures, saw {seen}"


def test_tasks_chapter_screenshot(browser, server):
    """A full-page picture of the Tasks chapter, kept beside the build for a human to look at."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(server) else r.abort())
    page = context.new_page()
    page.goto(f"{server}/chapters/01_tasks.html", wait_until="networkidle")
    page.evaluate("window.MathJax.startup.promise")
    out = _book().parent / "screenshots"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "01_tasks.png"), full_page=True)
    assert (out / "01_tasks.png").stat().st_size > 50_000
    context.close()


# --- Reading on a phone -----------------------------------------------------------------------

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


def _phone_page(browser, server, page_path):
    context = browser.new_context(**PHONE)
    context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(server) else r.abort())
    page = context.new_page()
    _open(page, f"{server}/{page_path}")
    return context, page


def test_phone_navigation_opens_and_follows_a_link(browser, server):
    context, page = _phone_page(browser, server, "chapters/01_tasks.html")
    sidebar = page.locator(".bd-sidebar-primary")
    assert not sidebar.is_visible() or sidebar.bounding_box()["x"] < 0, "the sidebar should start closed on a phone"
    toggles = [t for t in page.locator(".primary-toggle").all() if t.is_visible()]
    assert toggles, "no visible button opens the navigation at 390 px"
    toggles[0].tap()
    page.wait_for_function("() => { const s = document.querySelector('.bd-sidebar-primary');"
                           " const r = s.getBoundingClientRect(); return r.width > 100 && r.left >= 0; }",
                           timeout=5_000)
    link = sidebar.locator("a.reference.internal[href*='05_maml']").first
    assert link.is_visible(), "the opened navigation does not show the chapters"
    link.tap()
    page.wait_for_url("**/chapters/05_maml.html", timeout=10_000)
    assert "MAML" in page.title()
    context.close()


@pytest.mark.parametrize("page_path", [p for p in PAGES if p.startswith(("chapters/", "book/intro", "book/results"))])
def test_page_fits_a_phone(browser, server, page_path):
    """At 390 px nothing is cut off: the page itself never scrolls sideways, and wide code, tables and
    figures either fit or scroll inside their own box."""
    context, page = _phone_page(browser, server, page_path)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    clipped = page.evaluate("""() => {
        const out = [];
        const boxes = document.querySelectorAll('.bd-article pre, .bd-article table, .bd-article img');
        for (const el of boxes) {
            const style = getComputedStyle(el);
            const scrolls = ['auto', 'scroll'].includes(style.overflowX);
            const article = document.querySelector('.bd-article').getBoundingClientRect();
            const r = el.getBoundingClientRect();
            if (el.tagName === 'IMG') {
                if (r.right > article.right + 1) out.push(`image ${el.src.split('/').pop()} is ${r.width}px wide`);
            } else if (el.scrollWidth > el.clientWidth + 1 && !scrolls) {
                out.push(`${el.tagName.toLowerCase()} clipped: ${el.scrollWidth}px in ${el.clientWidth}px`);
            } else if (r.right > article.right + 1) {
                out.push(`${el.tagName.toLowerCase()} sticks out of the page by ${r.right - article.right}px`);
            }
        }
        return out.slice(0, 5);
    }""")
    context.close()
    assert overflow <= 1, f"{page_path}: the page scrolls sideways by {overflow}px at 390 px"
    assert not clipped, f"{page_path}: " + "; ".join(clipped)


def test_intro_formula_table_reads_on_a_phone(browser, server):
    context, page = _phone_page(browser, server, "book/intro.html")
    table = page.locator(".bd-article table").first
    box = table.bounding_box()
    style = table.evaluate("t => getComputedStyle(t).overflowX")
    fits = table.evaluate("t => t.scrollWidth <= t.clientWidth + 1")
    context.close()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 391
    assert fits or style in ("auto", "scroll"), "the table is wider than the phone and does not scroll"


def test_animation_buttons_all_show_an_icon(browser, server):
    """Each of the player's nine buttons draws a glyph: some pixels inside it differ from its background
    (with only DejaVu/Liberation fonts, Unicode media symbols would be empty boxes or blanks)."""
    from io import BytesIO

    from PIL import Image

    pages = [p for p in PAGES if p.startswith("chapters/")]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(server) else r.abort())
    page = context.new_page()
    checked = 0
    for page_path in pages:
        _open(page, f"{server}/{page_path}")
        buttons = page.locator(".animation button")
        if buttons.count() == 0:
            continue
        assert buttons.count() == 9, f"{page_path}: the player has {buttons.count()} buttons"
        for i in range(9):
            button = buttons.nth(i)
            button.scroll_into_view_if_needed()
            icon = button.locator("svg.mlcourse-icon")
            assert icon.count() == 1, f"{page_path}: button {i} has no drawn icon"
            shot = Image.open(BytesIO(icon.screenshot())).convert("L")
            lo, hi = shot.getextrema()
            assert hi - lo > 100, f"{page_path}: button {i} ({button.get_attribute('title')}) shows no glyph"
        checked += 1
    context.close()
    assert checked, "no chapter page has an animation player"


def test_launch_buttons_only_on_chapters(browser, server):
    context = browser.new_context()
    context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(server) else r.abort())
    page = context.new_page()
    _open(page, f"{server}/chapters/01_tasks.html")
    colab = page.locator(".dropdown-launch-buttons a[href*='colab.research.google.com']")
    assert colab.count() == 1
    assert "/blob/colab/chapters/01_tasks.ipynb" in colab.get_attribute("href")
    for other in ("book/intro.html", "book/results.html", "book/how_to_use.html"):
        _open(page, f"{server}/{other}")
        assert page.locator(".dropdown-launch-buttons").count() == 0, f"{other} offers to launch a notebook"
    context.close()


def test_footer_shows_the_release(browser, server):
    import mlcourse

    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server}/book/intro.html", wait_until="domcontentloaded")
    assert f"mlcourse {mlcourse.__version__}" in page.locator("footer.bd-footer-content").inner_text()
    context.close()
