# The commands of the README. Each works on a fresh machine: it creates .venv when missing and
# installs the project with its test extra (pip resolves torch/torchvision from the registry).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m search.demo --out runs/demo

# The fast tier: every test not marked slow; one that runs past 20 s unmarked fails the run (tests/tiers.py).
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" --fast-limit 20

# Everything (what CI runs): the tests that start several processes (torchrun, a process group) alone, the rest
# over two pytest-xdist workers, a test file to a worker (its module fixtures are built once).
test-all: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m distributed; status=$$?; \
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not distributed" -n 2 --dist loadfile && exit $$status

clean:
	rm -rf $(VENV) build dist *.egg-info
