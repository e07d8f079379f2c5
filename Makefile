# syncd — two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-slow bench install clean reference wheel catalogs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Run the daemon against the sandbox peers (shop, Bitrix24, 1C) on SQLite.
demo: $(STAMP)
	$(BIN)/syncd demo

## The whole suite (slow suites included when SYNCD_SLOW=1, as CI sets it).
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	SYNCD_SLOW=0 $(BIN)/python -m pytest -q -x $(PYTEST_ARGS)

## docs/reference.md from the config, mapping and rules models (a test compares them).
reference: $(STAMP)
	$(BIN)/python -m syncd.reference

## The status page's message catalogs: extract the strings, merge them into each language's .po
## (then translate what is new), compile the .mo files the package ships.
catalogs: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k N_ -k ngettext:1,2 --no-location --no-wrap --sort-output \
	  --project syncd --version 0.1 --msgid-bugs-address "" --copyright-holder syncd -o syncd/locale/syncd.pot .
	$(BIN)/pybabel update -i syncd/locale/syncd.pot -d syncd/locale -D syncd --no-wrap --no-fuzzy-matching --ignore-obsolete
	$(BIN)/pybabel compile -d syncd/locale -D syncd --statistics

## dist/: the sdist, then the wheel built from it (example mappings, config and unit inside).
wheel: $(STAMP)
	$(BIN)/python -m build --no-isolation --outdir dist .

bench: $(STAMP)
	$(BIN)/python bench/engine.py --n 20000
	$(BIN)/python bench/commerceml.py --scale 0.05
	$(BIN)/python bench/bitrix24.py --n 1000
	$(BIN)/python bench/intake.py --seconds 20 --n 2000

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist *.egg-info
