# Two commands on a fresh machine with Python 3 and pip:
#   make demo   set up .venv, then run the main job on the embedded default data
#   make test   set up .venv, then run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/demo
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m msdr.main --config configs/shapes3d_detail_ms_vae.py:demo --workdir $(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile tests

bench: $(STAMP)
	$(PY) benchmarks/data.py
	$(PY) benchmarks/train.py
	$(PY) benchmarks/layers.py

clean:
	rm -rf $(VENV) build *.egg-info
