# HDM Inspect. `make demo` shows the whole system; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch lies on disk on the dev/CI machines; a bare `torch`
# requirement would pull a multi-GB CUDA build. GPU hosts override TORCH_SPEC.
TORCH_SPEC ?= torch==2.13.0
PIP := $(PY) -m pip --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: install demo test protos protos-check bench bench-model bench-ablation bench-stream bench-results lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e '.[dev]'
	touch $@

demo: install
	$(VENV)/bin/hdm demo $(DEMO_ARGS)

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

protos: install
	$(PY) -m protos.generate

protos-check: install
	$(PY) -m protos.generate --check

bench: bench-model bench-stream bench-results

bench-model: install
	$(PY) -m bench.model_speed

# About an hour: four 15-minute trainings on ../shared/data/magnetic_tile at 128 px.
bench-ablation: install
	$(PY) -m bench.ablation --data ../shared/data/magnetic_tile --minutes 15 --image-size 128 --seed 0

bench-stream: install
	$(PY) -m bench.stream

bench-results: install
	$(PY) -m bench.results

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info

lint: install
	$(VENV)/bin/ruff check .
