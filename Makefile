# The README's commands.  `make install` is the shared first step.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := plugins/whatap plugins/oci plugins/spaceone_sink plugins/alertmanager
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: install run test bench clean messages

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
# `make bench BENCH_SOAK=1` sends 100,000 webhooks and prints worker memory instead.
# Then the console's pages with 100,000 incidents stored (bench/console.py; BENCH_CONSOLE_INCIDENTS).
bench: install
	$(BIN)/python bench/bench.py
	$(BIN)/python bench/console.py

# The console's ko/en catalogs: extract, merge into the .po files (translate what is new), compile.
# The compiled .mo files are committed, so `make run` needs no build step.
messages: install
	$(BIN)/pybabel extract -F babel.cfg -k lazy_gettext -o gateway/translations/messages.pot --no-location --omit-header .
	$(BIN)/pybabel update -i gateway/translations/messages.pot -d gateway/translations -w 120 --no-fuzzy-matching --ignore-obsolete
	$(BIN)/pybabel compile -d gateway/translations

clean:
	rm -rf $(VENV) instance
