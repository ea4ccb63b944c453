# KartPilot front door. `make demo` and `make test` work on a fresh clone: `make demo` needs only
# python3 (with venv) and make; `make test` first installs the system packages (make system-deps:
# apt-get as root or through sudo) and the GPL test ROM (make test-rom).
SHELL := /bin/bash
# Prerequisites run in the order written (system-deps before setup needs python3-venv, before plugin).
.NOTPARALLEL:
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
# MODEL agrees with common/defaults.py MODEL (the commands' own default); the drive port is DRIVE_PORT there
MODEL ?= data/models/pilotnet.keras
ROM ?=
SIM ?=
FRAMES ?= 2000000
ENVS ?= 24
# make test: pytest worker processes (pytest-xdist); a test module runs whole in one worker.
# 0 runs the tests in the make process itself, one after another.
TEST_WORKERS ?= 2

# The GPL mupen64plus test ROM: $KARTPILOT_TEST_ROM, else ../shared/roms, else fetched here by make test-rom.
TEST_ROM ?= $(or $(KARTPILOT_TEST_ROM),$(wildcard ../shared/roms/m64p_test_rom.v64),.cache/roms/m64p_test_rom.v64)

.PHONY: setup test lint demo record dataset clean-data train drive finetune plugin bench system-deps test-rom

setup: $(STAMP)

$(STAMP): pyproject.toml tools_deps.py
	@test -x $(VENV)/bin/pip || $(PYTHON3) -c 'import ensurepip, venv' 2>/dev/null || { echo "setup: error: $(PYTHON3) cannot make a \
	virtualenv (no venv/ensurepip module): on Debian/Ubuntu run 'sudo apt-get install python3-venv' \
	(make system-deps does it), then make again" >&2; exit 2; }
	test -x $(VENV)/bin/pip || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $$($(PYTHON3) tools_deps.py dev $(EXTRAS))
	touch $@

lint: setup
	$(VENV)/bin/ruff check .

# The system packages the tests need (one list: system_deps.sh --list). Cheap when all are there.
system-deps:
	@bash system_deps.sh

test-rom:
	@bash system_deps.sh --test-rom $(TEST_ROM)

# Under CI (or KARTPILOT_REQUIRE_SYSTEM=1) a test skipped for a missing system part fails the run.
# Modules are shared out whole between TEST_WORKERS processes (--dist loadfile): a module's fixtures
# are built once, and two tests that share a module never run at the same time.
test: system-deps test-rom setup lint plugin
	KARTPILOT_TEST_ROM=$(abspath $(TEST_ROM)) KARTPILOT_EXTRAS="$(EXTRAS)" $(PY) -m pytest -q \
		-n $(TEST_WORKERS) --dist loadfile

plugin:
	@if [ -f plugin_c/Makefile ]; then $(MAKE) -C plugin_c; fi

demo: setup
	$(PY) -m demo

# make record [SOURCE=screen|sim] [TRACK=luigi] [SECONDS=60] [OUT=data/sessions/NAME]
#             [NOISE=0.3 SEED=N: sim, DART steering noise on the expert's kart (see train/README.md)]
record: setup
	$(PY) -m record --source $(SOURCE) --track $(TRACK) --seconds $(SECONDS) $(if $(OUT),--out $(OUT)) \
	  $(if $(NOISE),--noise $(NOISE)) $(if $(SEED),--seed $(SEED))

# make dataset [SESSION="data/sessions/A data/sessions/B"] [DATA=data/prepared]: clean, then prepare
# (default: every session folder under data/sessions, i.e. each one holding a meta.json)
SESSIONS = $(or $(SESSION),$(patsubst %/meta.json,%,$(wildcard data/sessions/*/meta.json)))
dataset: setup
	@test -n "$(SESSIONS)" || { echo "make dataset: error: no sessions (no data/sessions/*/meta.json): make record first" >&2; exit 2; }
	$(PY) -m dataset clean $(SESSIONS)
	$(PY) -m dataset prepare $(SESSIONS) --out $(DATA) --force

train: setup
	$(PY) -m train --data $(DATA) --out $(MODEL) $(if $(EPOCHS),--epochs $(EPOCHS))

# SIM=1: kartsim through the server (window if DISPLAY), prints lap times; ROM=path: mupen64plus + plugin_c
# (STATE=file.st: start from that savestate); DRIVE_ARGS="...": more python -m drive options.
drive: setup $(if $(ROM),plugin)
	$(PY) -m drive --model $(MODEL) $(if $(SIM),--sim --track $(TRACK)) $(if $(LAPS),--laps $(LAPS)) $(if $(ROM),--rom $(ROM)) \
	  $(if $(and $(ROM),$(STATE)),--state $(abspath $(STATE))) $(DRIVE_ARGS)

# make finetune: kartsim's rainbow, from a rainbow clone (built first when missing: 1,000 s of DART
# expert demos + 15 epochs; MODEL=... on the command line uses yours). ENV=mk64 ROM=... STATE=...:
# the real game on $(ENVS) emulators (ENV=mupen-test ROM=<GPL test ROM>: the plumbing only);
# RAY=auto|ADDRESS|local: the training envs as Ray actors (make setup EXTRAS=ray). See envs/mupen/README.md.
# The run goes to FT_OUT; when FT_OUT already holds a checkpoint, make finetune resumes it (raise
# FRAMES to train on); a fresh run never replaces another run's checkpoint or best model.
# Why the clone does not go record -> dataset: `train demos` drives the same DART-noised expert that
# `record --source sim --noise` records and writes the same prepared arrays through the one writer
# (dataset/arrays.py), only without the PNG round trip of 30,000 frames (encoding them and reading
# them back for one throwaway clone); the record -> dataset -> train path itself is tested end to
# end in tests/test_dataset_one_session.py.
RAINBOW_BC := data/models/rainbow-bc.keras
FT_MODEL := $(if $(filter command line,$(origin MODEL)),$(MODEL),$(if $(ENV),$(MODEL),$(RAINBOW_BC)))
FT_OUT ?= data/finetune/$(or $(ENV),rainbow)

$(RAINBOW_BC): | setup
	$(PY) -m train demos --track rainbow --frames 30000 --noise 0.25 --seed 3 --out data/prepared-rainbow --json
	$(PY) -m train --data data/prepared-rainbow --out $@ --epochs 15 --patience 4 --json

finetune: setup plugin $(if $(ENV),,$(FT_MODEL))
	$(PY) -m train.finetune --model $(FT_MODEL) $(if $(ENV),--env $(ENV) --track $(ENV),--track rainbow) \
	  $(if $(ROM),--rom $(ROM)) $(if $(STATE),--state $(STATE)) $(if $(RAY),--ray $(RAY)) \
	  --frames $(FRAMES) --envs $(ENVS) --out $(FT_OUT) $(if $(wildcard $(FT_OUT)/ckpt/state.npz),--resume) --json

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
