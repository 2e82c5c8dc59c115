# leansam developer commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PARITY_DIR ?= $(abspath ../shared/parity)

.PHONY: setup browser demo demo-image test test-slow test-ray fuzz mutate lint format bench bench-docs clean

$(VENV)/.installed: pyproject.toml requirements-oracles.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]'
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-deps --no-build-isolation -r requirements-oracles.txt
	touch $@

setup: $(VENV)/.installed browser

# Headless chromium + chromedriver for the web app's browser tests (Debian packages, installed once).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium and chromium-driver (browser tests)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq >/dev/null && apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "note: chromium/chromedriver missing and cannot apt-get install them: browser tests will skip"; \
	  fi; \
	fi

demo: $(VENV)/.installed
	$(VENV)/bin/leansam segment leansam/assets/example.jpg --box 60,60,330,300 --point 200,180 --out demo_out
	@echo "overlay written to demo_out/overlay.png"

# The README's overlay image: `make demo`'s output with the bundled weights.
demo-image: demo
	cp demo_out/overlay.png docs/img/demo_overlay.png

test: setup
	$(VENV)/bin/ruff check leansam tests benchmarks
	$(VENV)/bin/ruff format --check leansam tests benchmarks
	LEANSAM_PARITY_DIR=$(PARITY_DIR) $(PY) -m pytest -q --durations=20

test-slow: setup
	LEANSAM_PARITY_DIR=$(PARITY_DIR) $(PY) -m pytest -q -m slow

# The dataset engine on a local Ray cluster (slow tests included).
test-ray: setup
	LEANSAM_PARITY_DIR=$(PARITY_DIR) $(PY) -m pytest -q -m '' tests/batch/test_ray_engine.py

# 10,000 generated inputs per parser (images, checkpoints, COCO / detections / boxes JSON, prompts);
# the counts and the outcome go to docs/results/fuzz.json (docs/security.md).
fuzz: setup
	$(PY) -m benchmarks.fuzz --examples 10000

# Plants known faults in a scratch copy of the tree and fails if the tests miss one (docs/testing.md).
mutate: setup
	LEANSAM_PARITY_DIR=$(PARITY_DIR) $(PY) scripts/mutate.py
	$(PY) scripts/mutate.py docs

lint: setup
	$(VENV)/bin/ruff check leansam tests benchmarks
	$(VENV)/bin/ruff format --check leansam tests benchmarks

format: setup
	$(VENV)/bin/ruff format leansam tests benchmarks
	$(VENV)/bin/ruff check --fix leansam tests benchmarks

bench: setup
	LEANSAM_PARITY_DIR=$(PARITY_DIR) $(PY) -m benchmarks run

bench-docs: setup
	$(PY) -m benchmarks docs

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache
