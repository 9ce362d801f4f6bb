# The only entry points: `make test` and `make demo` (CI runs `make test` via .ci/run).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

INTEROP       := tests/interop
INTEROP_STAMP := $(INTEROP)/node_modules/.installed

.PHONY: test lint types unit interop-deps fuzz bench demo clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "jargate needs Python 3.11 or newer (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

test: $(STAMP) lint types interop-deps unit

# The interop tests need Node >= 20 and the pinned packages of tests/interop (npm ci).
interop-deps:
	@if command -v node >/dev/null 2>&1 && [ "$$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ]; then \
		if [ ! -f $(INTEROP_STAMP) ] || [ $(INTEROP)/package-lock.json -nt $(INTEROP_STAMP) ]; then \
			npm ci --prefix $(INTEROP) --no-audit --no-fund --loglevel=error && touch $(INTEROP_STAMP); \
		fi; \
	else \
		echo "!!! INTEROP TESTS SKIPPED: they need Node.js >= 20 (found: $$(node --version 2>/dev/null || echo none)) !!!"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check proxy tests bench
	$(BIN)/ruff format --check proxy tests bench

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# A long property-based campaign, bounded in count (FUZZ_EXAMPLES per test) and
# time (FUZZ_SECONDS); prints how many cases ran.
FUZZ_SECONDS ?= 900
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz timeout $(FUZZ_SECONDS) $(BIN)/pytest -m fuzz -p no:randomly \
		--hypothesis-show-statistics -q tests | tee .fuzz-report.txt | grep -E "passing|failing|passed|failed"

# The load benchmark against the naive pass-through baseline, the floor and native
# oidc-provider (its pinned copy in tests/interop; not part of `make test`); writes
# bench/RESULTS.md. Bounded: each phase BENCH_SECONDS (3), the whole run 15 minutes.
bench: $(STAMP) interop-deps
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	timeout 900 $(BIN)/python bench/run.py

demo: $(STAMP)
	$(BIN)/jargate demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis $(INTEROP)/node_modules
