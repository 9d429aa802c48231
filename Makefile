# The README's commands.  `make install` is the shared first step.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := plugins/whatap plugins/oci plugins/spaceone_sink plugins/alertmanager
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: install run test bench bench-versus wheels image clean messages

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml $(addsuffix /setup.cfg,$(PLUGINS))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' $(addprefix -e ,$(PLUGINS))
	touch $@

run: install
	$(BIN)/gateway db upgrade
	$(BIN)/gateway serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest

# The benchmark of issue 2 (see bench/README.md): gateway vs a bare-Flask floor on SQLite
# and PostgreSQL under wrk.  Knobs: BENCH_DURATION, BENCH_WORKERS, BENCH_DBS, BENCH_RUNS;
# `make bench BENCH_SOAK=1` sends 100,000 webhooks (BENCH_SOAK_REQUESTS) and prints worker and dispatcher memory instead.
# Then the console's pages with 100,000 incidents stored (bench/console.py; BENCH_CONSOLE_INCIDENTS).
# `make bench BENCH_SCALE=1` instead: a year-like database bulk-loaded, then the incident list and
# pages read from it (bench/scale.py; BENCH_SCALE_INCIDENTS, BENCH_SCALE_ALERTS, BENCH_SCALE_SOURCES).
# BENCH_PURGE=1, BENCH_OUTBOX=1: retention and the outbox under backlog (bench/purge.py, bench/outbox.py);
# BENCH_CLAIM=1: one outbox claim against the backlog's depth (bench/claim.py).
bench: install
	$(BIN)/python -c 'import bench.targets as t; t.reset()'
ifeq ($(BENCH_SCALE),1)
	$(BIN)/python bench/scale.py
else ifeq ($(BENCH_PURGE),1)
	$(BIN)/python bench/purge.py
else ifeq ($(BENCH_OUTBOX),1)
	$(BIN)/python bench/outbox.py
else ifeq ($(BENCH_CLAIM),1)
	$(BIN)/python bench/claim.py
else
	$(BIN)/python bench/bench.py
	$(BIN)/python bench/console.py
endif
	$(BIN)/python bench/targets.py

# Issue 10's check that a refactoring costs nothing: this checkout's gateway against REV's, each measured by
# its own bench.py in alternating rounds (bench/versus.py; AFTER=<commit> instead of this checkout;
# BENCH_VERSUS_ROUNDS, BENCH_VERSUS_KINDS).
bench-versus: install
	@test -n "$(REV)" || (echo "usage: make bench-versus REV=<commit>"; exit 2)
	$(BIN)/python bench/versus.py $(REV) $(AFTER)

# The console's ko/en catalogs: extract, merge into the .po files (translate what is new), compile.
# The compiled .mo files are committed, so `make run` needs no build step.
messages: install
	$(BIN)/pybabel extract -F babel.cfg -k lazy_gettext -o gateway/translations/messages.pot --no-location --omit-header .
	$(BIN)/pybabel update -i gateway/translations/messages.pot -d gateway/translations -w 120 --no-fuzzy-matching --ignore-obsolete
	$(BIN)/pybabel compile -d gateway/translations

# The image installs from a wheelhouse (the gateway, its bundled plugins and every dependency) so that
# `docker build` needs no network.  The wheels match this Python, so build them with the image's 3.11.
WHEELHOUSE := dist/wheelhouse
IMAGE ?= alert-gateway:$(shell cat VERSION)
DOCKER ?= docker

wheels: install
	@$(BIN)/python -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "the image runs Python 3.11: make wheels PYTHON=python3.11")'
	rm -rf $(WHEELHOUSE) build $(addsuffix /build,$(PLUGINS))
	$(BIN)/python -m pip wheel --quiet --wheel-dir $(WHEELHOUSE) . $(PLUGINS)

image: wheels
	$(DOCKER) build --network none --tag $(IMAGE) --tag alert-gateway:latest .

clean:
	rm -rf $(VENV) instance dist build
