# EcoLedger: run and test against local services (see scripts/ensure-services.sh).
# Everything is overridable: make run DATABASE_URL=postgres://... ADMIN_PASSWORD=...

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/ecoledger
NATS_URL ?= nats://127.0.0.1:4222
# DEV ONLY: a well-known secret. Any deployment must set its own ECOLEDGER_JWT_SECRET.
ECOLEDGER_JWT_SECRET ?= dev-only-insecure-jwt-secret-do-not-use-outside-localhost
export DATABASE_URL NATS_URL ECOLEDGER_JWT_SECRET

# DEV ONLY: password of the first admin, created by `make run` when no admin exists yet.
ADMIN_PASSWORD ?= admin-change-me-now

BIN := ./target/release/ecoledger

.PHONY: services build run lint test clean-data bench faults chain-tools

services:
	scripts/ensure-services.sh

build:
	cargo build --release -p ecoledger

# DEV ONLY: where `make run` serves made-up prices in CoinGecko's and OilPriceAPI's formats for
# each provider whose base URL is unset (ECOLEDGER_COINGECKO_BASE_URL,
# ECOLEDGER_CARBON_PRICE_BASE_URL), polled every 5 s unless ECOLEDGER_PRICE_POLL_SECS says else.
FAKE_PRICES_ADDR ?= 127.0.0.1:8091

# The password reaches the CLI on stdin, through the environment rather than a command line
# (so it shows neither in `ps` nor in make's echo); `serve` runs without it.
# $(value) keeps a `$` literal in a password from the environment (ADMIN_PASSWORD='...' make run);
# on make's command line write `$$` for `$`.
# The fake price provider runs in the background and stops with `serve` (the EXIT trap).
# DEV ONLY: `serve` starts the dev chain (anvil from `chain-tools`, state under ./data/anvil)
# and deploys the contracts with anvil's well-known keys at its first start. Only `run` sets
# ECOLEDGER_ETH_DEV_CHAIN: tests and fault runs spawning `serve` must not start a chain.
run: export ADMIN_PASSWORD := $(value ADMIN_PASSWORD)
run: export ECOLEDGER_ETH_DEV_CHAIN ?= 1
run: services chain-tools build
	@printf '%s' "$$ADMIN_PASSWORD" | $(BIN) admin create --username admin --email admin@example.org --role admin --if-missing
	@if [ -z "$${ECOLEDGER_COINGECKO_BASE_URL:-}" ] || [ -z "$${ECOLEDGER_CARBON_PRICE_BASE_URL:-}" ]; then \
		env -u ADMIN_PASSWORD $(BIN) prices fake-provider --addr $(FAKE_PRICES_ADDR) & fake=$$!; \
		trap 'kill $$fake 2>/dev/null' EXIT; \
		for _ in $$(seq 100); do \
			(exec 3<>/dev/tcp/$(subst :,/,$(FAKE_PRICES_ADDR))) 2>/dev/null && break; \
			kill -0 $$fake 2>/dev/null || { echo "the fake price provider did not start on $(FAKE_PRICES_ADDR) (FAKE_PRICES_ADDR=...)"; exit 1; }; \
			sleep 0.1; \
		done; \
		export ECOLEDGER_COINGECKO_BASE_URL="$${ECOLEDGER_COINGECKO_BASE_URL:-http://$(FAKE_PRICES_ADDR)/api/v3}"; \
		export ECOLEDGER_CARBON_PRICE_BASE_URL="$${ECOLEDGER_CARBON_PRICE_BASE_URL:-http://$(FAKE_PRICES_ADDR)}"; \
		export ECOLEDGER_PRICE_POLL_SECS="$${ECOLEDGER_PRICE_POLL_SECS:-5}"; \
	fi; \
	env -u ADMIN_PASSWORD $(BIN) serve

# Load scenarios and their same-run pgbench baselines against the EcoLedger that `make run`
# serves in another terminal (BENCHMARKS.md); it starts nothing itself. Options go in
# BENCH_ARGS, e.g. make bench BENCH_ARGS='--scenario transfers --duration-secs 10'.
# The admin password reaches the benchmark through the environment, as in `run`.
BENCH_ARGS ?=
bench: export ECOLEDGER_BENCH_ADMIN_PASSWORD := $(or $(value ECOLEDGER_BENCH_ADMIN_PASSWORD),$(value ADMIN_PASSWORD))
bench: build
	$(BIN) bench load $(BENCH_ARGS)

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# The chain bridge's contract toolchain from chain-bridge/package-lock.json (solc, OpenZeppelin
# and anvil, whose binary ships in an npm platform package): installed with `npm ci` only when
# the lock changed since the last install (a stamp in node_modules holds the lock's hash).
# No install scripts run: none of these packages needs one offline.
CHAIN_TOOLS_STAMP := chain-bridge/node_modules/.ecoledger-lock-sha256
chain-tools:
	@command -v npm >/dev/null 2>&1 || { echo "npm not found: run scripts/ensure-services.sh (or apt-get install nodejs npm)"; exit 1; }
	@sum="$$(sha256sum chain-bridge/package-lock.json | cut -d' ' -f1)"; \
	if [ "$$(cat $(CHAIN_TOOLS_STAMP) 2>/dev/null)" != "$$sum" ]; then \
		npm ci --prefix chain-bridge --ignore-scripts --no-audit --no-fund; \
		echo "$$sum" > $(CHAIN_TOOLS_STAMP); \
	fi

# Tests create their own databases off DATABASE_URL and start private Postgres instances with
# the initdb/pg_ctl found in ECOLEDGER_PG_BIN (computed after `services` may have installed them).
# The chain bridge's tests run anvil and node from `chain-tools`.
test: services lint chain-tools
	export ECOLEDGER_PG_BIN="$${ECOLEDGER_PG_BIN:-$$(scripts/pg-bin.sh)}"; \
	if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-fail-fast; \
	else \
		cargo test --workspace; \
	fi

clean-data:
	rm -rf ./data

# Scripted fault runs (BENCHMARKS.md, "Faults") with the release binary, each against its own
# private Postgres (initdb) and NATS on free ports, never the shared ones: SIGKILLs of the
# server, NATS down, Postgres restarted, then the invariant check. Exit 1 when one fails.
# make faults FAULT=kill FAULT_SECS=30
FAULT ?= all
FAULT_SECS ?= 60
faults: services build
	export ECOLEDGER_PG_BIN="$${ECOLEDGER_PG_BIN:-$$(scripts/pg-bin.sh)}"; \
	$(BIN) bench faults --fault $(FAULT) --duration-secs $(FAULT_SECS)
