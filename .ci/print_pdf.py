"""Print a built single-page HTML book to PDF with the system's Chromium, offline.

    python .ci/print_pdf.py HTML_DIR OUT.pdf

Jupyter Book's own HTML-to-PDF (`--builder pdfhtml`) drives a browser that Playwright downloads;
this does the same with the Chromium that the browser check uses, served from a local port so
that MathJax and the figures load as they do online. No request leaves the machine.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

# As in Jupyter Book's pdfhtml: keep a cell's input and output on one page where they fit.
PRINT_CSS = """
div.cell_input, div.cell_output { break-inside: avoid; }
pre { white-space: pre-wrap !important; overflow-wrap: anywhere; }  /* paper does not scroll */
.bd-header, .bd-sidebar-primary, .bd-sidebar-secondary, .header-article, .prev-next-area, footer { display: none !important; }
"""


class _Book(http.server.SimpleHTTPRequestHandler):
    """Serves the folder, and the single page at /book.html: Sphinx writes that page where the root
    document lies (book/intro.html) but its links relative to the folder's top."""

    page = "index.html"

    def translate_path(self, path):
        if path.split("?")[0] == "/book.html":
            return str(Path(self.directory) / self.page)
        return super().translate_path(path)

    def log_message(self, *args):
        pass


def _root_page(html: Path) -> str:
    """The page that index.html redirects to (Jupyter Book writes a redirect to the root document)."""
    match = re.search(r'url=([^"\'>]+)', (html / "index.html").read_text())
    return match.group(1) if match else "index.html"


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    html, out = Path(args[0]), Path(args[1])
    if not (html / "index.html").is_file():
        print(f"no index.html in {html}: build the single-page book first", file=sys.stderr)
        return 1
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        print("Chromium is needed to print the book: apt-get install chromium", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    handler = type("Handler", (_Book,), {"page": _root_page(html)})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(html)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    server = f"http://127.0.0.1:{httpd.server_address[1]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.route("**/*", lambda r: r.continue_() if urlparse(r.request.url).netloc == urlparse(server).netloc
                       or r.request.url.startswith("data:") else r.abort())
            page.goto(f"{server}/book.html", wait_until="networkidle", timeout=300_000)
            # MathJax is deferred: on a page this long it starts after the network is idle.
            if page.evaluate("typeof window.MathJax") != "undefined":
                page.wait_for_function("window.MathJax.startup !== undefined", timeout=300_000)
                page.evaluate("window.MathJax.startup.promise")
            page.add_style_tag(content=PRINT_CSS)
            page.emulate_media(media="print")
            page.pdf(path=str(out), format="A4", print_background=True,
                     margin={"top": "15mm", "bottom": "15mm", "left": "12mm", "right": "12mm"})
            browser.close()
    finally:
        httpd.shutdown()
    print(f"The book as PDF: {out.resolve()} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
