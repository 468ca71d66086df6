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
# lmms-eval plug-in (`python -m lmms_eval --model ocr_mllm`, docs/eval.md). --no-deps: its full requirement list
# would downgrade protobuf and python-dateutil and add torchvision, wandb and ~60 more; these are what its CLI imports.
# The pytablewriter chain is --no-deps too: typepy[datetime] wants python-dateutil<3, and pip's fallback
# (pytablewriter 0.38) prints the results table with its header replaced by letters.
LMMS_EVAL_NODEPS := lmms-eval==0.7.3 pytablewriter==1.2.1 DataProperty==1.1.1 typepy==1.3.5 tabledata==1.3.5 \
                    mbstrdecoder==1.1.5 pathvalidate==3.3.1 tcolorpy==0.1.7 chardet==6.0.0.post1
LMMS_EVAL_DEPS := loguru==0.7.3 evaluate==0.4.6 sacrebleu==2.6.0 tenacity==9.2.1
STAMPS := .stamps
QUICKSTART_DIR ?= out/quickstart

.PHONY: help setup apt lint format test test-fast quickstart bench clean

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
	$(PIP) install --quiet --no-deps $(LMMS_EVAL_NODEPS)
	$(PIP) install --quiet $(LMMS_EVAL_DEPS)
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

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: setup lint
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

quickstart: setup
	$(PY) scripts/quickstart.py --output $(QUICKSTART_DIR)

bench: setup
	$(PY) -m bench.run_all

clean:
	rm -rf $(STAMPS) out
