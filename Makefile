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

## demo: profile the bundled demo program; writes demo.html, demo.pprof and demo.cpuprofile
demo: $(PY)
	$(PY) -m pip install -q -e .
	$(PY) -m pysampler.demo

## test: install test dependencies (Python and Debian) and run lint and the suite
test: build
	./scripts/system-deps.sh
	./scripts/viewer-deps.sh
	$(MAKE) lint
	$(PY) -m pytest -q

## lint: ruff, mypy --strict and cython-lint
lint: $(PY)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy --strict -p pysampler
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cython-lint --max-line-length 100 src/_sampler.pyx src/_columns.pyx src/_heapgraph.pyx

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
	rm -rf build dist $(VENV) src/*.egg-info src/_sampler.c src/_columns.c src/pysampler/*.so

## matrix: the checks that need more than `make test` (root, network, ~1 GB of
## Debian chroots cached in ~/.cache/pysampler-matrix): workflows, wheel
## identifiers, cross-compiling the C core, a manylinux wheel, and the suite
## on CPython 3.9/3.13/3.14/3.15 and on linux/arm64. See scripts/matrix/.
.PHONY: matrix matrix-static
matrix-static: $(PY)
	$(PY) -m pip install -q -e '.[test,matrix]'
	./scripts/matrix/actionlint.sh
	./scripts/matrix/identifiers.sh
	./scripts/matrix/cross-compile.sh
	./scripts/matrix/wheel.sh

matrix: matrix-static
	./scripts/matrix/matrix.sh
