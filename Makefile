# The README's two commands: `make reproduce` and `make test`. Both create .venv and install.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test test-slow reproduce lint typecheck format bench docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[all,dev]"
	touch $(STAMP)

DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[all,dev,docs]"
	touch $(DOCS_STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy on the package as installed: build/typecheck/loraml links to loraml/*.py and to the theory/,
# figures/ and empirical/ folders (setuptools maps them into loraml; mypy cannot follow that map).
typecheck: $(STAMP)
	rm -rf build/typecheck && mkdir -p build/typecheck/loraml
	ln -s $(CURDIR)/loraml/*.py $(CURDIR)/loraml/py.typed build/typecheck/loraml/
	for d in theory figures empirical; do ln -s $(CURDIR)/$$d build/typecheck/loraml/$$d; done
	$(PY) -m mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Fast, offline, deterministic (hypothesis profile "ci"); slow checks are deselected.
# One BLAS thread: the tests use small matrices, where threads only contend (2-core machine).
test: lint typecheck
	OPENBLAS_NUM_THREADS=1 HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q

# Thorough property tests with many more examples, and the slow checks.
test-slow: $(STAMP)
	OPENBLAS_NUM_THREADS=1 HYPOTHESIS_PROFILE=thorough $(PY) -m pytest -q -m "slow or not slow"

# The main job: verify the paper's statements and regenerate the figures (quick protocol).
reproduce: $(STAMP)
	$(VENV)/bin/loraml verify --quick
	$(VENV)/bin/loraml figures --quick

bench: $(STAMP)
	$(PY) benchmarks/bench_solvers.py

# The documentation site (Sphinx: API reference, gallery, Results page), offline, warnings are
# errors; into docs/_build/html.
docs: $(DOCS_STAMP)
	OPENBLAS_NUM_THREADS=1 MPLBACKEND=Agg $(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis build *.egg-info docs/_build docs/auto_examples docs/generated
