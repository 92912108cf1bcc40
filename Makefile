# Two entry points: `make demo` runs the example workflow, `make test` runs the tests.
# Each creates its own virtualenv in .venv, so both work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench appliance clean

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/demo.py

test: $(VENV)/.installed
	scripts/system-deps
	$(PY) -m pytest

# QUICK=1 for small sizes. Figures are printed and written to build/bench/*.json.
bench: $(VENV)/.installed
	$(PY) bench/bench_bundle.py $(if $(QUICK),--quick) --json build/bench/bundle.json
	$(PY) bench/bench_stage.py $(if $(QUICK),--quick) --json build/bench/stage.json
	$(PY) bench/bench_serve.py $(if $(QUICK),--quick) --json build/bench/serve.json
	$(PY) bench/bench_launch.py $(if $(QUICK),--quick) --json build/bench/launch.json
	$(PY) bench/bench_startup.py --json build/bench/startup.json
	$(PY) bench/bench_cluster.py --json build/bench/cluster.json
	$(PY) bench/bench_cache.py $(if $(QUICK),--quick) --json build/bench/cache.json
	$(PY) bench/bench_scale.py $(if $(QUICK),--quick) --json build/bench/scale.json

# The appliance image, built by the engine at DOCKER_HOST (`appliance/dev-engine up` makes one).
appliance: $(VENV)/.installed
	$(PY) appliance/build_image.py $(if $(TAG),--tag $(TAG))

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests appliance bench examples
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build dist src/*.egg-info
