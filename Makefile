# Task runner. `make demo` and `make test` set everything up on a fresh
# machine (a virtualenv in .venv, the package built from this checkout).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: demo test build lint venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

venv: $(PY)

## build: compile the native core and install the package (editable) with test tools
build: $(PY)
	$(PY) -m pip install -q -e '.[test]'

## demo: profile the bundled demo program; writes demo.pprof and demo.cpuprofile
demo: $(PY)
	$(PY) -m pip install -q -e .
	$(PY) -m pysampler.demo

## test: install test dependencies (Python and Debian) and run lint and the suite
test: build
	./scripts/system-deps.sh
	$(MAKE) lint
	$(PY) -m pytest -q

## lint: ruff, mypy --strict and cython-lint
lint: $(PY)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy --strict -p pysampler
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cython-lint --max-line-length 100 src/_sampler.pyx
	$(VENV)/bin/ruff check benchmarks
	$(VENV)/bin/ruff format --check benchmarks

## bench: the full overhead suite (~30 min); writes docs/benchmarks/results.{json,md} and overhead.png
bench: $(PY)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/run.py

## bench-quick: a subset in under 3 minutes; writes build/bench-quick/
bench-quick: $(PY)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/run.py --quick

.PHONY: bench bench-quick

clean:
	rm -rf build dist $(VENV) src/*.egg-info src/_sampler.c src/pysampler/*.so
