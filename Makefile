# syncd — two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# What syncd runs with, pinned with hashes: requirements.lock (the README's deploy steps install
# it) and requirements-dev.lock (the same pins plus the test tools; make install and CI).
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
PIP_TOOLS := pip-tools==7.7.0

.PHONY: demo test test-fast test-slow test-latest test-compat lock bench install clean reference wheel catalogs

$(STAMP): pyproject.toml $(DEV_LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

## Run the daemon against the sandbox peers (shop, Bitrix24, 1C) on SQLite (`make demo PORT=9000`
## for another port than 8787; PORT=0 takes a free one).
demo: $(STAMP)
	$(BIN)/syncd demo $(if $(PORT),--port $(PORT),)

## The whole suite (slow suites included when SYNCD_SLOW=1, as CI sets it).
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	SYNCD_SLOW=0 $(BIN)/python -m pytest -q -x $(PYTEST_ARGS)

## Drift: the newest versions pyproject.toml allows (not the lock), in their own venv, against the
## suites that depend most on the libraries' behaviour: the CommerceML reader (lxml), the IMAP
## connector (imapclient, Dovecot) and the Bitrix24 client with its third-party peers. CI runs it,
## so a new release that breaks syncd is a named failure here before a user meets it.
LATEST_SUITES := tests/commerceml tests/connectors/imap tests/connectors/bitrix24 tests/sandbox
test-latest:
	rm -rf .cache/latest-venv
	$(PY) -m venv .cache/latest-venv
	.cache/latest-venv/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[test]'
	.cache/latest-venv/bin/python -m syncd.versions
	.cache/latest-venv/bin/python -m pytest -q -p no:cacheprovider $(LATEST_SUITES)

## The oldest lxml series the reader supports (pyproject.toml: lxml>=6.1), with the rest as locked:
## the CommerceML suites, since 6.1 and 6.2 report syntax errors differently.
COMPAT_LXML ?= 6.1.3
test-compat: $(STAMP)
	rm -rf .cache/compat-venv
	$(PY) -m venv .cache/compat-venv
	.cache/compat-venv/bin/python -m pip install -q --require-hashes -r $(DEV_LOCK)
	.cache/compat-venv/bin/python -m pip install -q 'lxml==$(COMPAT_LXML)'
	.cache/compat-venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	.cache/compat-venv/bin/python -m syncd.versions
	.cache/compat-venv/bin/python -m pytest -q -p no:cacheprovider tests/commerceml

## Re-pin both lock files to the newest versions pyproject.toml allows (then: make test test-compat).
lock:
	test -x .cache/lock-venv/bin/pip-compile || ($(PY) -m venv .cache/lock-venv && \
	  .cache/lock-venv/bin/python -m pip install -q '$(PIP_TOOLS)')
	.cache/lock-venv/bin/pip-compile -q --upgrade --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links --extra test -o $(DEV_LOCK) pyproject.toml
	.cache/lock-venv/bin/pip-compile -q --upgrade --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links -c $(DEV_LOCK) -o $(LOCK) pyproject.toml

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
	cp $(LOCK) dist/

bench: $(STAMP)
	$(BIN)/python bench/engine.py --n 20000
	$(BIN)/python bench/commerceml.py --scale 0.05
	$(BIN)/python bench/bitrix24.py --n 1000
	$(BIN)/python bench/intake.py --seconds 20 --n 2000

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist *.egg-info .cache/latest-venv .cache/compat-venv
