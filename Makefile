# The two commands of README.md.  Both start with the idempotent set-up (a no-op once done).
PY := .venv/bin/python
TASK ?= panoptic

.PHONY: setup demo test

setup:
	@bash tools/setup_env.sh

# Main job: synthetic data -> train -> evaluate -> prediction PNGs (TASK=panoptic|instance|semantic).
demo: setup
	$(PY) tools/demo.py --task $(TASK)

test: setup
	$(PY) -m pytest tests
