# KartPilot front door. `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON3 ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS ?=
STAMP := $(VENV)/.installed$(if $(EXTRAS),-$(EXTRAS))

# record / train / drive knobs
SOURCE ?= screen
TRACK ?= luigi
SECONDS ?= 60
SESSION ?=
DATA ?= data/prepared
MODEL ?= data/models/pilotnet.keras
ROM ?=
SIM ?=
FRAMES ?= 2000000
ENVS ?= 24

.PHONY: setup test lint demo record dataset clean-data train drive finetune plugin bench

setup: $(STAMP)

$(STAMP): pyproject.toml tools_deps.py
	test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $$($(PYTHON3) tools_deps.py dev $(EXTRAS))
	touch $@

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint plugin
	$(PY) -m pytest -q

plugin:
	@if [ -f plugin_c/Makefile ]; then $(MAKE) -C plugin_c; fi

demo: setup
	$(PY) -m demo

# make record [SOURCE=screen|sim] [TRACK=luigi] [SECONDS=60] [OUT=data/sessions/NAME]
record: setup
	$(PY) -m record --source $(SOURCE) --track $(TRACK) --seconds $(SECONDS) $(if $(OUT),--out $(OUT))

# make dataset [SESSION="data/sessions/A data/sessions/B"] [DATA=data/prepared]: clean, then prepare
# (default: every session under data/sessions)
dataset: setup
	@test -n "$(or $(SESSION),$(wildcard data/sessions/*))" || { echo "no sessions: make record first"; exit 2; }
	$(PY) -m dataset clean $(or $(SESSION),$(wildcard data/sessions/*))
	$(PY) -m dataset prepare $(or $(SESSION),$(wildcard data/sessions/*)) --out $(DATA) --force

train: setup
	$(PY) -m train --data $(DATA) --out $(MODEL) $(if $(EPOCHS),--epochs $(EPOCHS))

# SIM=1: kartsim through the server (window if DISPLAY), prints lap times; ROM=path: mupen64plus + plugin_c
# (STATE=file.st: start from that savestate); DRIVE_ARGS="...": more python -m drive options.
drive: setup
	$(PY) -m drive --model $(MODEL) $(if $(SIM),--sim --track $(TRACK)) $(if $(LAPS),--laps $(LAPS)) $(if $(ROM),--rom $(ROM)) \
	  $(if $(and $(ROM),$(STATE)),--mupen-arg=--savestate --mupen-arg=$(abspath $(STATE))) $(DRIVE_ARGS)

# make finetune: kartsim's rainbow, from a rainbow clone (built first when missing: 1,000 s of DART
# expert demos + 15 epochs; MODEL=... on the command line uses yours). ENV=mk64 ROM=... STATE=...:
# the real game on $(ENVS) emulators; RAY=auto|ADDRESS: environment workers as Ray actors
# (make setup EXTRAS=ray). See envs/mupen/README.md.
RAINBOW_BC := data/models/rainbow-bc.keras
FT_MODEL := $(if $(filter command line,$(origin MODEL)),$(MODEL),$(RAINBOW_BC))

$(RAINBOW_BC): | setup
	$(PY) -m train demos --track rainbow --frames 30000 --noise 0.25 --seed 3 --out data/prepared-rainbow --json
	$(PY) -m train --data data/prepared-rainbow --out $@ --epochs 15 --patience 4 --json

finetune: setup plugin $(if $(or $(ENV),$(RAY)),,$(FT_MODEL))
ifeq ($(or $(ENV),$(RAY)),)
	$(PY) -m train.finetune --model $(FT_MODEL) --track rainbow --frames $(FRAMES) --envs $(ENVS) --out data/finetune/rainbow --json
else
	$(PY) -m train.finetune.ray_backend $(if $(RAY),--ray $(RAY)) $(if $(ROM),--rom $(ROM)) $(if $(STATE),--state $(STATE)) -- \
	  --model $(MODEL) $(if $(ENV),--env $(ENV) --track $(ENV) --eval-tracks $(ENV),--track rainbow) \
	  --frames $(FRAMES) --envs $(ENVS) --out data/finetune/$(or $(ENV),rainbow) --json
endif

# make bench: every benchmark (output kept in $(BENCH_OUT)/NAME.log), then the table of ratios and goals
BENCH_OUT ?= data/bench
bench: setup plugin
	mkdir -p $(BENCH_OUT)
	set -o pipefail; $(PY) -m envs.kartsim bench --envs 24 --steps 300 --size 66x200 --json | tee $(BENCH_OUT)/kartsim.log
	set -o pipefail; $(PY) -m bench.record --rate 60 --seconds 20 --json | tee $(BENCH_OUT)/record.log
	set -o pipefail; $(PY) -m bench.train --json | tee $(BENCH_OUT)/train.log
	set -o pipefail; $(PY) -m bench.drive --json | tee $(BENCH_OUT)/drive.log
	set -o pipefail; $(PY) -m bench.plugin --json | tee $(BENCH_OUT)/plugin.log
	set -o pipefail; $(PY) -m bench.envs --json | tee $(BENCH_OUT)/envs.log
	set -o pipefail; $(PY) -m bench.finetune --json | tee $(BENCH_OUT)/finetune.log
	$(PY) -m bench.table $(addprefix $(BENCH_OUT)/,kartsim.log record.log train.log drive.log plugin.log envs.log finetune.log)
