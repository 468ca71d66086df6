# Everything a fresh machine needs is installed from here (CI runs `make test` in a fresh clone).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pip must never swap the CPU torch for a multi-GB CUDA build: every install runs under this constraint.
PIP := PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(VENV)/bin/pip
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= train,deepspeed,convert,demo,eval,bench,dev
APT_PACKAGES := fonts-noto-cjk fonts-dejavu fonts-wqy-zenhei fonts-wqy-microhei fonts-arphic-ukai fonts-arphic-uming \
                fonts-lxgw-wenkai fonts-liberation2 fonts-freefont-ttf tesseract-ocr tesseract-ocr-eng \
                tesseract-ocr-chi-sim tesseract-ocr-chi-tra chromium
STAMPS := .stamps
QUICKSTART_DIR ?= out/quickstart

.PHONY: help setup apt test test-fast quickstart bench clean

help:
	@echo "make quickstart  train a line reader from scratch on synthetic lines (CPU, 15 min), print held-out CER"
	@echo "make test        install everything and run the test suite"
	@echo "make bench       run the benchmarks (writes bench/results/)"

$(STAMPS)/venv: setup.cfg constraints.txt pyproject.toml
	@mkdir -p $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[$(EXTRAS)]"
	touch $@

$(STAMPS)/apt:
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	touch $@

setup: $(STAMPS)/venv $(STAMPS)/apt

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

quickstart: setup
	$(PY) scripts/quickstart.py --output $(QUICKSTART_DIR)

bench: setup
	$(PY) -m bench.run_all

clean:
	rm -rf $(STAMPS) out
