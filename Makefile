# Entry points for a fresh machine: each target installs the pinned environment into .venv on first use.
# torch comes from the local CPU wheel via constraints.txt (an unpinned torch would pull a multi-GB CUDA build).
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: demo smoke test test-fast test-models test-slow lint clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv .venv
	.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)  ## `mpa demo`: MPA on easy-VQA with the bundled tiny teacher and student, offline (about 7 minutes on 2 CPU cores)
	.venv/bin/mpa demo

smoke: $(STAMP)  ## tiny teacher + student, 20 images, the whole pipeline, offline (about 1 minute)
	$(PY) scripts/smoke_run.py runs/smoke

test: test-fast test-models  ## everything CI runs: the fast suite, then the tiny-model suite (about 7 minutes on 2 quiet cores)

test-fast: $(STAMP)  ## the default suite: no model is loaded (scripted backend, pure code); under a minute
	$(PY) -m pytest -q -m "not slow and not models"

test-models: $(STAMP)  ## tiny real checkpoints: every family through every stage, served backends, demo models
	$(PY) -m pytest -q -m "models and not slow"

test-slow: $(STAMP)  ## heavy checks kept out of CI
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	.venv/bin/ruff check src tests scripts speed && .venv/bin/ruff format --check src tests scripts speed

clean:
	rm -rf .venv runs
