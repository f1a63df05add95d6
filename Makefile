# The README's two set-up commands. Each creates .venv with the pinned
# dependencies first (torch==2.13.0 is the CPU build on this machine's disk).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.metaloco-installed

.PHONY: demo test venv bench clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.py setup.cfg
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(VENV)/bin/metaloco demo

bench: $(STAMP)
	$(VENV)/bin/metaloco bench sim --json

clean:
	rm -rf $(VENV) build *.egg-info
