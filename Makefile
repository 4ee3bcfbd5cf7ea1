# crmsync: the commands a developer and CI run. `make test` installs what the tests need first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The build cache lives outside the clone, so fresh clones (CI) reuse it.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/crmsync/target
export CARGO_TERM_COLOR ?= never

PG_BIN := $(firstword $(wildcard /usr/lib/postgresql/*/bin))

.PHONY: help test deps deps-postgres deps-python lint fmt sandbox

help:
	@echo "make test     install test dependencies (moto, cfn-lint, Postgres) and run every test"
	@echo "make lint     rustfmt and clippy, warnings denied"
	@echo "make sandbox  run the CRM sandbox (REX, Follow Up Boss, Lofty) on 127.0.0.1:8787"

## Dependencies ------------------------------------------------------------------------------------

deps: deps-postgres deps-python

# Postgres server binaries, from Debian's packages, only where they are missing.
deps-postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "postgres: found"; \
	else \
		echo "postgres: installing from apt"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi

# moto (AWS emulation) and cfn-lint, from PyPI, only where they are missing.
deps-python:
	@command -v moto_server >/dev/null 2>&1 || { echo "moto: installing"; python3 -m pip install -q "moto[server]"; }
	@command -v cfn-lint >/dev/null 2>&1 || { echo "cfn-lint: installing"; python3 -m pip install -q cfn-lint; }
	@echo "moto, cfn-lint: found"

## Checks --------------------------------------------------------------------------------------------

TEST_LOG := $(CARGO_TARGET_DIR)/crmsync-test.log

test: deps
	cfn-lint template.yaml
	@mkdir -p "$(CARGO_TARGET_DIR)"
	@set -o pipefail; PATH="$(PATH):$(PG_BIN)" cargo test --workspace --locked 2>&1 | tee "$(TEST_LOG)"; \
	status=$$?; \
	awk '/^test result:/ { passed += $$4; failed += $$6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$(TEST_LOG)"; \
	exit $$status

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

## Local services ------------------------------------------------------------------------------------

sandbox:
	cargo run --release --locked -p crm-sandbox -- --auto-approve
