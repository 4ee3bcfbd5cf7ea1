# crmsync: the commands a developer and CI run. `make test` installs what the tests need first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The build cache lives outside the clone, so fresh clones (CI) reuse it.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/crmsync/target
export CARGO_TERM_COLOR ?= never

PG_BIN := $(firstword $(wildcard /usr/lib/postgresql/*/bin))
# The Python tools (moto, cfn-lint, cargo-lambda) live in a virtual environment of the project's own, next
# to the build cache: stock Debian refuses `pip install` into the system Python (PEP 668). Its bin/ comes
# first on PATH for every target, so `python3` there is the venv's (the tests start moto with it).
PY_VENV := $(HOME)/.cache/crmsync/venv
export PATH := $(PY_VENV)/bin:$(PATH)
# The SAM CLI: the one on PATH, else the one `deps-python` installs. `sam validate` runs offline with
# any region and dummy credentials.
SAM_VENV := $(HOME)/.cache/crmsync/sam-venv
SAM = $(shell command -v sam 2>/dev/null || echo "$(SAM_VENV)/bin/sam")
SAM_OFFLINE := AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x SAM_CLI_TELEMETRY=0

.PHONY: help test soak deps deps-venv deps-postgres deps-python deps-moto deps-lambda deps-fuzz lint fmt sandbox dev demo migrate bench

help:
	@echo "make demo     run the main job end to end on a local stack (no AWS account, no CRM credentials)"
	@echo "make dev      run the local stack (Postgres, moto, CRM sandbox, every function) until Ctrl-C"
	@echo "make test     install test dependencies (moto, cfn-lint, SAM CLI, Postgres, PgBouncer) and run every test"
	@echo "make soak     the long reliability runs: crash loops, the full push fault matrix, every fuzz target"
	@echo "make lint     rustfmt and clippy, warnings denied"
	@echo "make sandbox  run the CRM sandbox (REX, Follow Up Boss, Lofty) on 127.0.0.1:8787"
	@echo "make bench    measure speed, cold start, memory, push pacing, size and the queue's scale; writes docs/BENCHMARKS.md"

## Dependencies ------------------------------------------------------------------------------------

# The project's Python virtual environment (python3-venv from apt where Debian lacks it).
deps-venv:
	@[ -x "$(PY_VENV)/bin/python3" ] || { \
		echo "python: creating the virtual environment $(PY_VENV)"; \
		mkdir -p "$(dir $(PY_VENV))"; \
		python3 -m venv "$(PY_VENV)" 2>/dev/null || { \
			rm -rf "$(PY_VENV)"; \
			echo "python: installing python3-venv from apt"; \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; } || \
				{ echo "error: python3 -m venv failed; install python3-venv (apt-get install python3-venv)"; exit 1; }; \
			python3 -m venv "$(PY_VENV)"; }; }

# moto alone (the local stack needs neither cfn-lint nor the SAM CLI), in the venv.
deps-moto: deps-venv
	@python3 -c "import moto.server" 2>/dev/null || { echo "moto: installing into $(PY_VENV)"; python3 -m pip install -q "moto[server]"; }

# cargo-lambda (serves the functions locally), from PyPI into the venv, only where it is missing.
deps-lambda: deps-venv
	@command -v cargo-lambda >/dev/null 2>&1 || { echo "cargo-lambda: installing into $(PY_VENV)"; python3 -m pip install -q cargo-lambda; }
	@echo "cargo-lambda: found"

deps: deps-postgres deps-python deps-lambda

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

# moto and cfn-lint into the venv, and the SAM CLI into a venv of its own (it pins many packages,
# botocore among them), only where they are missing.
deps-python: deps-moto
	@command -v cfn-lint >/dev/null 2>&1 || { echo "cfn-lint: installing into $(PY_VENV)"; python3 -m pip install -q cfn-lint; }
	@command -v sam >/dev/null 2>&1 || [ -x "$(SAM_VENV)/bin/sam" ] || { \
		echo "aws-sam-cli: installing into $(SAM_VENV)"; \
		python3 -m venv "$(SAM_VENV)" && "$(SAM_VENV)/bin/python" -m pip install -q aws-sam-cli; }
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

# cargo-deny (deny.toml: bans, licenses, sources, advisories), from crates.io, only where it is missing.
deps-deny:
	@command -v cargo-deny >/dev/null 2>&1 || { echo "cargo-deny: installing"; cargo install --locked cargo-deny; }
	@echo "cargo-deny: found"

# The RustSec advisory database where deny.toml's db-path and db-urls put it (cargo-deny names the folder
# after the URL). Refreshed by `cargo deny fetch` where GitHub is reachable, or cloned and pulled from
# ADVISORY_DB_MIRROR (a clone or bare mirror of rustsec/advisory-db) where it is not. The checks run
# offline; with no copy at all, the advisories are skipped with a warning and the other checks still run.
ADVISORY_DB := $(HOME)/.cache/crmsync/advisory-dbs/advisory-db-3157b0e258782691

lint: deps-deny
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo deny --locked --offline check --hide-inclusion-graph bans licenses sources
	@db="$(ADVISORY_DB)"; \
	if [ -n "$$ADVISORY_DB_MIRROR" ]; then \
		if [ -d "$$db/.git" ]; then \
			git -C "$$db" pull --quiet --ff-only "$$ADVISORY_DB_MIRROR" HEAD || echo "advisory-db: cannot pull from $$ADVISORY_DB_MIRROR"; \
		else \
			mkdir -p "$$(dirname "$$db")"; \
			git clone --quiet "$$ADVISORY_DB_MIRROR" "$$db" || { rm -rf "$$db"; echo "advisory-db: cannot clone $$ADVISORY_DB_MIRROR"; }; \
		fi; \
	else \
		timeout 120 cargo deny --locked fetch db >/dev/null 2>&1 || echo "advisory-db: cannot fetch it (no network?)"; \
	fi; \
	if [ -d "$$db/.git" ]; then \
		echo "advisory-db: as of $$(git -C "$$db" log -1 --format=%cs)"; \
		cargo deny --locked --offline check advisories; \
	else \
		echo "WARNING: no RustSec advisory database (set ADVISORY_DB_MIRROR, or allow GitHub): advisories NOT checked"; \
	fi

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

# Applies infra/migrations to a deployed database: make migrate DATABASE_URL='postgres://…:5432/postgres?sslmode=verify-full&sslrootcert=ca.pem' (the direct connection)
migrate:
	cargo run --locked -p crmsync-devstack -- migrate
