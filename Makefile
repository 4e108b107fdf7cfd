# facestream: two commands on a fresh machine.
#   make serve   create .venv if missing, install, serve the webcam filter on http://127.0.0.1:8080
#   make test    same install, then lint (ruff), types (mypy) and the whole pytest suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.facestream-installed
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: install serve test lint types pytest bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# facenet-pytorch pins torch<2.3 and numpy<2; we only read its MTCNN weight files.
	$(BIN)/python -m pip install --quiet --no-deps facenet-pytorch==2.6.0
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(BIN)/facestream serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: install
	$(BIN)/mypy

pytest: install
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q -ra --durations=15

test: lint types pytest

bench: install
	$(BIN)/facestream bench pipeline

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
