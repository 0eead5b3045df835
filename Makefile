# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast lint format clean bench bench-eval bench-serve bench-video bench-merge tiny-lm

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/.installed

SEEDS ?= 0
demo: install  ## toy world + tiny models -> alignment -> SFT -> DPO -> runs/demo/scorecard.json (SEEDS="0 1 2": seed spread)
	$(BIN)/anymal-lit demo --seeds $(SEEDS)

tiny-lm: install  ## replace the shipped tiny chat LM (anymal_lit/toyworld/assets/tiny-lm) by one trained from scratch by its recipe (~16 CPU min; other weights, see its recipe.json)
	$(BIN)/anymal-lit tiny-lm --out anymal_lit/toyworld/assets/tiny-lm

test: install  ## the whole suite (CPU, offline, tiny models)
	$(BIN)/python -m pytest -q

test-fast: install  ## unit tests only
	$(BIN)/python -m pytest -q -m "not integration and not slow"

lint: install
	$(BIN)/ruff check anymal_lit tests benchmarks
	$(BIN)/ruff format --check anymal_lit tests benchmarks

format: install
	$(BIN)/ruff format anymal_lit tests benchmarks
	$(BIN)/ruff check --fix anymal_lit tests benchmarks

clean:
	rm -rf runs .pytest_cache

bench-eval: install  ## generation throughput, batch 16 vs batch 1 (needs the toy world: make demo or anymal-lit toyworld)
	$(BIN)/python benchmarks/eval_throughput.py

bench-serve: install  ## anymal-lit serve: 16 concurrent clients vs one at a time, time to first token (needs make demo)
	$(BIN)/python benchmarks/serve_throughput.py

bench: install  ## training throughput: packing vs padding, cache vs live, FLOP/s, FSDP vs DDP bytes, token-budget vs fixed batches (needs the toy world); tensor parallelism; video loading
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/token_budget.py
	$(BIN)/python benchmarks/tensor_parallel.py
	$(BIN)/python benchmarks/video_decode.py

bench-merge: install  ## model merging: two SFT adapters (QA only, captions only) and their interpolation scored -> runs/merge/sweep (needs make demo)
	$(BIN)/python benchmarks/merge_sweep.py

bench-video: install  ## video load time, seek vs full decode, 10-s vs 10-min video -> runs/bench/video_decode.md
	$(BIN)/python benchmarks/video_decode.py
