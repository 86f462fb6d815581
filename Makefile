# worldsim: every target bootstraps .venv when it is missing, so each is one command on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
EXTRAS  ?= dev,atari
TORCH_CPU_VERSION ?= 2.13.0

.PHONY: setup quickstart test test-slow bench lint wheelhouse clean

$(BIN)/worldsim: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip wheel setuptools
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: installing the default torch build"; \
	else \
		echo "No GPU: installing the CPU torch wheel $(TORCH_CPU_VERSION) first"; \
		$(BIN)/python -m pip install "torch==$(TORCH_CPU_VERSION)" || exit 1; \
	fi
	$(BIN)/python -m pip install -e ".[$(EXTRAS)]"
	@touch $(BIN)/worldsim

setup: $(BIN)/worldsim

quickstart: setup
	$(BIN)/worldsim quickstart

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

bench: setup
	$(BIN)/python benchmarks/run_all.py

lint: setup
	$(BIN)/ruff check .

# Wheels that a GPU machine without a package index lacks when its image already holds torch,
# lightning, numpy, matplotlib, tensorboard, rich, safetensors, imageio, einops and pillow (the
# lent H100/H200 machines: docs/training.md, "On a GPU machine without internet"), at the
# versions this .venv runs. All pure Python (antlr4's runtime is built from its sdist), so one
# set serves any Python >= 3.10.
OFFLINE_WHEELS ?= hydra-core omegaconf antlr4-python3-runtime gymnasium farama-notifications moviepy proglog decorator python-dotenv
wheelhouse: setup
	rm -rf .whl
	$(BIN)/python -m pip wheel --no-deps -w .whl $$($(BIN)/python -c "import sys, importlib.metadata as m; \
		print(' '.join(n + '==' + m.version(n) for n in sys.argv[1:]))" $(OFFLINE_WHEELS))
	@ls -l .whl

clean:
	rm -rf $(VENV) runs .pytest_cache
