# The book and its tests. Every target sets up what it needs on a fresh machine:
#   make book    build the HTML book at the book's scale (executes every chapter)
#   make test    unit tests, every chapter at quick scale (nbval), the book with warnings as
#                errors, and the built book checked in headless Chromium
#   make serve   serve the built book on http://127.0.0.1:8000
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
JB := $(VENV)/bin/jupyter-book
VENDOR := book/_static/vendor
PORT ?= 8000
JOBS ?= 2

# A CPU build of torch lying in pip's find-links folder is used where there is one (it installs
# from disk in seconds); elsewhere pip chooses the build for the machine.
LOCAL_TORCH := $(firstword $(wildcard $(PIP_FIND_LINKS)/torch-*+cpu-*.whl))
# Tests and CI read the data from ../shared/data when it is there; otherwise the user cache folder.
ifneq ($(wildcard ../shared/data/omniglot),)
export MLCOURSE_DATA ?= $(abspath ../shared/data)
endif
# Output reaches the log as it happens.
export PYTHONUNBUFFERED := 1

.PHONY: help book test unit notebooks book-quick browser serve clean

help:
	@sed -n '2,5p' Makefile | sed 's/^# *//'

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10 or newer is needed, this is " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@if $(PY) -c 'import torch' 2>/dev/null; then echo "torch already installed"; \
	elif [ -n "$(LOCAL_TORCH)" ]; then $(PY) -m pip install --quiet "$(LOCAL_TORCH)"; \
	else $(PY) -m pip install --quiet torch; fi
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet -e .
	$(PY) -m pip check
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

book: $(VENV)/.installed $(VENDOR)/.fetched
	$(JB) build . --keep-going
	@echo "The book is in $(abspath _build/html); open $(abspath _build/html/index.html) or run: make serve"

# The test book is built at quick scale into its own folder, so it never replaces the full one.
QUICK_HTML := _build/quick/_build/html

test: unit notebooks book-quick browser

# The grader runs student code under bubblewrap; its tests run in the weaker fallback without it.
.PHONY: bubblewrap
bubblewrap:
	@command -v bwrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else echo "The grader's sandbox needs bubblewrap (apt-get install bubblewrap, as root); testing its fallback"; fi; }

unit: $(VENV)/.installed bubblewrap
	MLCOURSE_QUICK=1 $(PY) -m pytest -n $(JOBS) -m "not browser" tests

notebooks: $(VENV)/.installed
	MLCOURSE_QUICK=1 OMP_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) --dist loadscope --nbval-lax chapters

book-quick: $(VENV)/.installed $(VENDOR)/.fetched
	rm -rf _build/quick
	MLCOURSE_QUICK=1 $(JB) build . -W --keep-going --path-output _build/quick

browser: $(VENV)/.installed
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "The browser check needs Chromium: apt-get install chromium (as root)"; exit 1; fi; }
	MLCOURSE_BOOK_HTML=$(abspath $(QUICK_HTML)) $(PY) -m pytest -m browser tests

serve:
	@test -f _build/html/index.html || { echo "No book built yet: run make book first."; exit 1; }
	@echo "Serving the book on http://127.0.0.1:$(PORT) (Ctrl-C stops)"
	$(PYTHON) -m http.server $(PORT) --bind 127.0.0.1 --directory _build/html

clean:
	rm -rf _build $(VENDOR)
