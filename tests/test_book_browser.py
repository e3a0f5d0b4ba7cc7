"""The built book in a real browser, with no network: every page loads from a local server with
no failed request and no console error, math is typeset by the bundled MathJax, every image
loads, and embedded widgets render with the bundled widget JavaScript.

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

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
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
