# pbxlink: the two commands a newcomer needs are `make demo` and `make test`.
# Both set up everything they need (virtualenv, Debian packages, the Asterisk lab) on a
# fresh Debian machine, as root (the lab runs Asterisk in a chroot).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help venv lab check test test-unit demo bench clean

help:
	@echo "make demo   - set up the lab and show calls flowing end to end"
	@echo "make test   - set up everything and run the checks and the whole test suite"
	@echo "make check  - ruff check + format, mypy --strict (code, tests, bench), import-linter, systemd-analyze"
	@echo "make bench  - run the benchmarks and print their figures"

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@tests/lab/host-packages.sh python
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

lab: venv
	@tests/lab/host-packages.sh mail
	tests/lab/asterisk-setup.sh

check: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy common daemon adapters routing gateway tests bench
	$(BIN)/lint-imports
	@tests/lab/host-packages.sh systemd
	@for unit in systemd/*.service; do \
	  sed "s|/usr/local/bin/pbxlink|$(CURDIR)/$(BIN)/pbxlink|g" $$unit > $(VENV)/$$(basename $$unit); \
	  out=$$(systemd-analyze verify $(VENV)/$$(basename $$unit) 2>&1); \
	  if [ -n "$$out" ]; then echo "$$out"; echo "systemd-analyze verify $$unit: not clean"; exit 1; fi; \
	  echo "systemd-analyze verify $$unit: clean"; done

test: lab check
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest ran no test: that is a failure"; exit 1; fi; exit $$rc

test-unit: venv
	$(BIN)/python -m pytest -m "not lab" $(PYTEST_ARGS)

demo: lab
	PYTHONPATH=tests/lab $(BIN)/python -m pbxlab.demo

bench: lab
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
