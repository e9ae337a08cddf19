# Two commands on a fresh machine: `make demo` (set up, then the main job) and `make test`.
# The pinned CPU build of torch is installed first, so the project's `torch>=2.6` requirement is met
# without pulling a multi-GB CUDA build. On a GPU machine: make TORCH_SPEC=torch demo
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/plan profile examples/gpt.py:gpt3_175b
	$(BIN)/plan cluster --gpus 8x2 --gpu a100-80gb
	$(BIN)/plan examples/gpt.py:gpt3_13b --gpus 8x4 --global-batch 512 --compare tp8-pp2-dp2
	$(BIN)/plan examples/gpt.py:tiny --gpus 8 --gpu cpu --global-batch 16 --tp 2 --pp 2 --dp 2 \
		--emit out/tiny-gpt --force
	$(BIN)/plan run out/tiny-gpt -- --steps 40 --lr 3e-3 --warmup 5 --checkpoint-every 20

test: $(VENV)/.installed
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/profile_175b.py
	$(BIN)/python benchmarks/search.py

.PHONY: setup demo test bench
