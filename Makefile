# roadmap: `make roadmap` and `make test` are all a user types; each sets up .venv/ on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -c "from roadmap.models.depthwise import kernels; print('depthwise kernels:', kernels())"  # built once, about 30 s
	touch $(STAMP)

venv: $(STAMP) ## create .venv/ and install the project (done by every target that needs it)

FASHION := /usr/share/datasets/fashion-mnist

data: ## Fashion-MNIST from Debian's dataset-fashion-mnist (as root); else downloaded at first use
	@if [ -d $(FASHION) ]; then echo "Fashion-MNIST: $(FASHION)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) && \
	  echo "Fashion-MNIST: installed $(FASHION)"; \
	else echo "note: $(FASHION) missing and not root: 'sudo apt-get install dataset-fashion-mnist', or let torchvision download it at first use"; fi

test: $(STAMP) data ## run the test suite (CPU, a few minutes)
	$(PY) -m pytest

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check .

describe: $(STAMP) ## every step's params and GFLOPs beside the paper's (LADDER=resnet50|resnet200)
	$(PY) -m roadmap.describe ladder=$(LADDER)

snapshot: $(STAMP) ## rewrite tests/snapshots/{complexity,training}.json after a deliberate change (say why in the commit)
	$(PY) -m tests.snapshot

PRESET ?= cpu
SEEDS ?= 0
LADDER ?= resnet50
OUT ?= runs/$(LADDER)-$(PRESET)
ARGS ?=

roadmap: $(STAMP) data ## every step of the ladder as one resumable sweep + its results table (PRESET SEEDS LADDER OUT ARGS)
	@exec $(PY) -m roadmap.sweep '$(OUT)' --preset $(PRESET) --seeds $(SEEDS) --ladder $(LADDER) -- $(ARGS)

RESULTS ?= $(OUT)/results.csv

collect: $(STAMP) ## the results tables of a sweep (OUT=runs/...)
	$(PY) -m roadmap.results.collect '$(OUT)'

plots: $(STAMP) ## the figures (PNG) of a results table (RESULTS=.../results.csv), beside it
	$(PY) -m roadmap.results.plots '$(RESULTS)'

notebook: $(STAMP) ## execute analysis/ladder.py on RESULTS, writing an .ipynb beside the table
	$(PY) -m roadmap.results.notebooks analysis/ladder.py '$(RESULTS)'

protocol: $(STAMP) data ## the cpu protocol grid (24 runs, resumable) + the selection rule -> conf/protocol/cpu*.yaml
	$(PY) -m roadmap.studies.protocol grid runs/protocol
	$(PY) -m roadmap.studies.protocol select runs/protocol --write

robustness: $(STAMP) data ## the ladder under the selected protocol and 2 alternatives, 3 seeds (resumable) + the view
	@exec $(PY) -m roadmap.studies.protocol robustness runs/robustness --seeds 0,1,2

length: $(STAMP) data ## the ends and the recipe step at 10 epochs, 3 seeds (resumable), against the 2-epoch ladder
	$(PY) -m roadmap.sweep runs/length --seeds 0,1,2 --steps resnet50,recipe,separate_downsampling -- epochs=10
	$(PY) -m roadmap.studies.length runs/robustness/cpu runs/length

cpu-results: $(STAMP) data ## the cpu ladder's committed results at HEAD: robustness (3 protocols x 3 seeds), length, fidelity -> results/ (about 45 min)
	$(call RESTORE_TO,results/robustness/robustness-runs.tar.gz,runs/robustness)
	$(MAKE) robustness; s=$$?; $(SAVE) runs/robustness results/robustness/robustness-runs.tar.gz; exit $$s
	$(MAKE) length
	$(PY) -m roadmap.results.collect runs/robustness/cpu --out results/resnet50-cpu
	$(MAKE) plots RESULTS=results/resnet50-cpu/results.csv
	cp runs/robustness/robustness.{md,csv,png} results/robustness/
	for p in cpu cpu_far cpu_next; do cp runs/robustness/$$p/runs.csv results/robustness/runs-$$p.csv; done
	mkdir -p results/length && cp runs/length/length.{md,csv} runs/length/runs.csv results/length/
	$(PY) -m roadmap.studies.fidelity results/robustness/robustness.csv --out results/robustness/fidelity.md

# The study preset (experiments/protocol.md, amendment 3): each rule's runs are resumable and kept
# in results/study/*-runs.tar.gz (roadmap.studies.records), so a study survives a new machine.
STUDY := results/study
SAVE = $(PY) -m roadmap.studies.records save
RESTORE_TO = if [ -f $(1) ]; then $(PY) -m roadmap.studies.records restore $(1) $(2); fi
RESTORE = $(call RESTORE_TO,$(STUDY)/$(1)-runs.tar.gz,runs/study-$(1))
STUDY_SEEDS ?= 0,1,2,3,4
ALT_SEEDS ?= 0,1,2

$(STUDY)/reference-runs.csv: | $(STAMP) # rule 1's reference: one seed of the cpu ladder (make roadmap), timed
	$(MAKE) roadmap OUT=runs/resnet50-cpu PRESET=cpu SEEDS=0 LADDER=resnet50 ARGS=
	mkdir -p $(STUDY) && cp runs/resnet50-cpu/runs.csv $@

study-length: $(STAMP) data $(STUDY)/reference-runs.csv ## rule 3: step 0 and recipe at 2-32 epochs, 3 seeds (resumable; under an hour) + the chosen length
	$(call RESTORE,length)
	$(PY) -m roadmap.sweep runs/study-length --seeds 0,1,2 --steps resnet50,recipe -- epochs=2,4,8,16,32; \
	  s=$$?; $(SAVE) runs/study-length $(STUDY)/length-runs.tar.gz; exit $$s
	$(PY) -m roadmap.studies.study length runs/study-length --reference $(STUDY)/reference-runs.csv --out $(STUDY)

study-geometry: $(STAMP) data ## rule 4: the map-size steps at 64x64 and 32x32, 3 seeds (resumable; hours) + the chosen size and the preset
	$(call RESTORE,geometry)
	$(PY) -m roadmap.studies.study geometry runs/study-geometry --length $(STUDY)/length-rule.json --run --out $(STUDY); \
	  s=$$?; $(SAVE) runs/study-geometry $(STUDY)/geometry-runs.tar.gz; exit $$s
	$(PY) -m roadmap.studies.study preset --length $(STUDY)/length-rule.json --geometry $(STUDY)/geometry-rule.json --write

study-grid: $(STAMP) data ## rule 5: the protocol grid at the study preset, seeds 0,1 (resumable) + the selection -> conf/protocol/study*.yaml
	$(call RESTORE,grid)
	$(PY) -m roadmap.studies.protocol grid runs/study-grid --preset study; \
	  s=$$?; $(SAVE) runs/study-grid $(STUDY)/grid-runs.tar.gz; exit $$s
	$(PY) -m roadmap.studies.protocol select runs/study-grid --preset study --write
	$(PY) -m roadmap.studies.study preset --length $(STUDY)/length-rule.json --geometry $(STUDY)/geometry-rule.json --write

study-budget: $(STAMP) data ## rules 1 and 9: one seed of the study's ladder, timed (seed 0 of make study's selected protocol)
	mkdir -p $(STUDY)
	/usr/bin/time -f %e -o $(STUDY)/budget-time.txt $(MAKE) roadmap PRESET=study SEEDS=0 OUT=runs/study-ladder/study; \
	  s=$$?; $(SAVE) runs/study-ladder $(STUDY)/ladder-runs.tar.gz; exit $$s
	$(PY) -m roadmap.studies.study budget runs/study-ladder/study --time $(STUDY)/budget-time.txt --out $(STUDY)

study: $(STAMP) data ## rule 6: the study's ladder, selected protocol x 5 seeds + 2 alternatives x 3 (resumable) + the view with pooled intervals, the ladder's table and figures
	$(call RESTORE,ladder)
	$(PY) -m roadmap.studies.protocol robustness runs/study-ladder --preset study --selected-seeds $(STUDY_SEEDS) --seeds $(ALT_SEEDS) --intervals pooled; \
	  s=$$?; $(SAVE) runs/study-ladder $(STUDY)/ladder-runs.tar.gz; exit $$s
	cp runs/study-ladder/robustness.{md,csv,png} $(STUDY)/
	$(PY) -m roadmap.results.collect runs/study-ladder/study --out $(STUDY)/ladder
	$(MAKE) plots RESULTS=$(STUDY)/ladder/results.csv
	for p in $$(ls runs/study-ladder); do [ -f runs/study-ladder/$$p/runs.csv ] && cp runs/study-ladder/$$p/runs.csv $(STUDY)/ladder-runs-$$p.csv; done; true
	$(PY) -m roadmap.studies.fidelity $(STUDY)/robustness.csv --intervals pooled --out $(STUDY)/fidelity.md

bench: $(STAMP) data ## speed of every step vs torchvision and the machine's peak -> BENCHMARKS.md
	$(PY) -m roadmap.bench preset=cpu name=cpu-32px
	$(PY) -m roadmap.bench preset=imagenet name=imagenet-224px batch_size=8 steps=1 repeats=5 warmup=1 data=false
	$(PY) -m roadmap.bench preset=cpu name=cpu-data-path models=false data=false augment=true

GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_ARGS ?=

gpu-check: ## on a machine with one CUDA GPU (no registry needed): every GPU figure -> benchmarks/gpu-*.json, BENCHMARKS.md
	$(GPU_PY) -m roadmap.gpucheck $(GPU_ARGS)

clean: ## remove the venv and caches (keeps runs/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

.PHONY: help venv data test lint describe snapshot roadmap protocol robustness length study-length study-geometry study-grid study collect plots notebook bench gpu-check clean
