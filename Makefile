# Fresh machine: `make demo` or `make test` create .venv, install the pinned stack, then run.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -q

.PHONY: install demo test bench-data clean

$(VENV)/.deps: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) "setuptools>=69"
	$(PIP) -c constraints.txt ".[test]"
	touch $@

# The package itself is reinstalled (not editable) on every run, so tests exercise what `pip install .` ships.
install: $(VENV)/.deps
	$(PIP) --no-deps --no-build-isolation --force-reinstall .

demo: install
	$(VENV)/bin/mdl demo

test: install
	cd tests && ../$(VENV)/bin/pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info

# Real photos for the benchmarks (bench/transfer.py): Fashion-MNIST from Debian, IDX files under
# /usr/share/datasets/fashion-mnist. Nothing in `make test` needs it.
bench-data:
	test -d /usr/share/datasets/fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)
