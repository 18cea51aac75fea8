# Two entry points: `make demo` (the main job on the built-in corpus) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
DEMO_DIR := data/demo_corpus
STAMP := $(VENV)/.installed

.PHONY: demo test install clean-demo

install: $(STAMP)

# torch is installed first with an explicit pin: a bare `torch` would pull CUDA packages.
$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) -m cpc.demo --corpus $(DEMO_DIR) --run runs/demo

clean-demo:
	rm -rf $(DEMO_DIR) runs/demo
