# crmsync: the commands a developer and CI run. `make test` installs what the tests need first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The build cache lives outside the clone, so fresh clones (CI) reuse it.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/crmsync/target
export CARGO_TERM_COLOR ?= never

PG_BIN := $(firstword $(wildcard /usr/lib/postgresql/*/bin))
# The SAM CLI: the one on PATH, else the one `deps-python` installs. `sam validate` runs offline with
# any region and dummy credentials.
SAM_VENV := $(HOME)/.cache/crmsync/sam-venv
SAM = $(shell command -v sam 2>/dev/null || echo "$(SAM_VENV)/bin/sam")
SAM_OFFLINE := AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x SAM_CLI_TELEMETRY=0

.PHONY: help test soak deps deps-postgres deps-python deps-moto deps-lambda deps-fuzz lint fmt sandbox dev demo migrate bench

help:
	@echo "make demo     run the main job end to end on a local stack (no AWS account, no CRM credentials)"
	@echo "make dev      run the local stack (Postgres, moto, CRM sandbox, every function) until Ctrl-C"
	@echo "make test     install test dependencies (moto, cfn-lint, SAM CLI, Postgres, PgBouncer) and run every test"
	@echo "make soak     the long reliability runs: crash loops, the full push fault matrix, every fuzz target"
	@echo "make lint     rustfmt and clippy, warnings denied"
	@echo "make sandbox  run the CRM sandbox (REX, Follow Up Boss, Lofty) on 127.0.0.1:8787"
	@echo "make bench    measure speed, cold start, memory, push pacing and size; writes docs/BENCHMARKS.md"

## Dependencies ------------------------------------------------------------------------------------

# moto alone (the local stack needs neither cfn-lint nor the SAM CLI).
deps-moto:
	@command -v moto_server >/dev/null 2>&1 || { echo "moto: installing"; python3 -m pip install -q "moto[server]"; }

# cargo-lambda (serves the functions locally), from PyPI, only where it is missing.
deps-lambda:
	@command -v cargo-lambda >/dev/null 2>&1 || { echo "cargo-lambda: installing"; python3 -m pip install -q cargo-lambda; }
	@echo "cargo-lambda: found"

deps: deps-postgres deps-python

# Postgres server binaries and PgBouncer (the pooler tests), from Debian's packages, where missing.
deps-postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "postgres: found"; \
	else \
		echo "postgres: installing from apt"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi
	@if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then \
		echo "pgbouncer: found"; \
	else \
		echo "pgbouncer: installing from apt"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; \
	fi

# moto (AWS emulation), cfn-lint and the SAM CLI, from PyPI, only where they are missing. The SAM CLI
# pins many packages (botocore among them), so it gets a virtualenv of its own next to the build cache.
deps-python:
	@command -v moto_server >/dev/null 2>&1 || { echo "moto: installing"; python3 -m pip install -q "moto[server]"; }
	@command -v cfn-lint >/dev/null 2>&1 || { echo "cfn-lint: installing"; python3 -m pip install -q cfn-lint; }
	@command -v sam >/dev/null 2>&1 || [ -x "$(SAM_VENV)/bin/sam" ] || { \
		echo "aws-sam-cli: installing into $(SAM_VENV)"; \
		{ python3 -m venv "$(SAM_VENV)" && "$(SAM_VENV)/bin/python" -m pip install -q aws-sam-cli; } || \
		{ rm -rf "$(SAM_VENV)"; python3 -m pip install -q aws-sam-cli; }; }
	@echo "moto, cfn-lint, sam: found"

## Checks --------------------------------------------------------------------------------------------

TEST_LOG := $(CARGO_TARGET_DIR)/crmsync-test.log

test: deps
	cfn-lint template.yaml
	$(SAM_OFFLINE) $(SAM) validate --lint </dev/null
	@mkdir -p "$(CARGO_TARGET_DIR)"
	@set -o pipefail; PATH="$(PATH):$(PG_BIN)" cargo test --workspace --locked 2>&1 | tee "$(TEST_LOG)"; \
	status=$$?; \
	awk '/^test result:/ { passed += $$4; failed += $$6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$(TEST_LOG)"; \
	exit $$status

## Reliability (docs/RELIABILITY.md) ------------------------------------------------------------------

# cargo-fuzz, from crates.io, only where it is missing. It runs on the stable toolchain with
# RUSTC_BOOTSTRAP=1 (fuzz/run.sh).
deps-fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || { echo "cargo-fuzz: installing"; cargo install --locked cargo-fuzz; }
	@echo "cargo-fuzz: found"

# The long runs: sync processes killed SOAK_KILLS times per CRM (against a crm-sandbox process), the push
# fault matrix with SOAK_PUSH_LEADS leads per fault, the sync fault matrix on SOAK_RECORDS records per CRM,
# then every fuzz target for FUZZ_SECONDS each (cargo-fuzz on the stable toolchain: fuzz/run.sh).
# Figures go to $(SOAK_REPORT).
SOAK_KILLS ?= 50
SOAK_PUSH_LEADS ?= 25
SOAK_RECORDS ?= 5000
FUZZ_SECONDS ?= 60
FUZZ_TARGET_DIR ?= $(HOME)/.cache/crmsync/target-fuzz
SOAK_REPORT := $(CARGO_TARGET_DIR)/reliability-report.log

soak: deps deps-fuzz
	@mkdir -p "$(CARGO_TARGET_DIR)"
	cargo build --locked -p crm-sandbox
	PATH="$(PATH):$(PG_BIN)" SOAK_KILLS=$(SOAK_KILLS) SOAK_PUSH_LEADS=$(SOAK_PUSH_LEADS) SOAK_RECORDS=$(SOAK_RECORDS) \
		cargo test --locked -p crmsync-tests --test integration -- --ignored --test-threads=1 soak_
	CARGO_TARGET_DIR="$(FUZZ_TARGET_DIR)" fuzz/run.sh $(FUZZ_SECONDS) "$(SOAK_REPORT)"
	@echo "soak: figures in $(SOAK_REPORT)"

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

## Benchmarks --------------------------------------------------------------------------------------

FUNCTIONS := $(sort $(patsubst functions/%/Cargo.toml,%,$(wildcard functions/*/Cargo.toml)))

# Not part of CI. Release builds (each built once, then reused from the cache): every function and the
# hello-world baseline as `cargo build --release` makes them, the CRM sandbox, the bench itself (with its
# symbols, for the profile of the sync), and the arm64 zips as `sam build` makes them; then crmsync-bench
# runs every benchmark and writes docs/BENCHMARKS.md (see infra/bench).
bench: deps-postgres deps-moto deps-lambda
	cargo build --release --locked $(addprefix -p ,$(FUNCTIONS)) -p lambda-hello
	cargo build --release --locked -p crm-sandbox
	CARGO_PROFILE_RELEASE_STRIP=none cargo build --release --locked -p crmsync-bench
	cargo lambda build --release --arm64 --output-format zip --locked $(addprefix -p ,$(FUNCTIONS))
	PATH="$(PATH):$(PG_BIN)" "$(CARGO_TARGET_DIR)/release/crmsync-bench" run --command "make bench"

## Local services ------------------------------------------------------------------------------------

sandbox:
	cargo run --release --locked -p crm-sandbox -- --auto-approve

## Local stack ---------------------------------------------------------------------------------------

# Postgres (kept in .dev/pg), moto, the CRM sandbox and `cargo lambda watch` at the API Gateway paths.
dev: deps-postgres deps-moto deps-lambda
	PATH="$(PATH):$(PG_BIN)" cargo run --locked -p crmsync-devstack -- dev

# The main job end to end on the local stack: connect the three CRMs, sync, push a lead, show the logs.
demo: deps-postgres deps-moto deps-lambda
	PATH="$(PATH):$(PG_BIN)" cargo run --locked -p crmsync-devstack -- demo

# Applies infra/migrations to a deployed database: make migrate DATABASE_URL='postgres://…?sslmode=require'
migrate:
	cargo run --locked -p crmsync-devstack -- migrate
