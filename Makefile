# The two set-up commands: `make quickstart` (install + the CPU demo end to end) and `make test`.
PYTHON ?= python3
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install install-dev quickstart test lint

# The face-mesh models come out of the mediapipe wheel on PyPI (see face/mesh_models.py).
install:
	$(PYTHON) -m pip install -q -r requirements.txt
	$(PYTHON) -m face.mesh_models > /dev/null

install-dev:
	$(PYTHON) -m pip install -q -r requirements-dev.txt
	$(PYTHON) -m face.mesh_models > /dev/null

quickstart: install
	SKIP_INSTALL=1 PYTHON=$(PYTHON) bash quickstart.sh

test: install-dev
	$(PYTHON) -m pytest -q

# ruff's lint rules and formatting, as configured in pyproject.toml; .ci/run runs it before the tests.
lint: install-dev
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
