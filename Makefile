# tweetbot: `make demo` runs the pipeline on the demo data, `make test` runs the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.9
BIN := .venv/bin
export DVC_NO_ANALYTICS := 1
# Stage commands in dvc.yaml call `python`: the project venv must come first on PATH.
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: help install demo test test-slow lint bench

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install:  ## install uv (pinned) and the locked dependencies into .venv
	@uv --version 2>/dev/null | grep -q ' $(UV_VERSION)' || python3 -m pip install --quiet uv==$(UV_VERSION)
	uv sync --frozen --compile-bytecode

demo: install  ## run the pipeline on the built-in demo data
	$(BIN)/dvc repro
	$(BIN)/tweetbot summary

test: install  ## the default test suite (minutes)
	$(BIN)/pytest -m "not slow"

test-slow: install  ## the slow tests: container image, browsers, long training
	$(BIN)/pytest -m slow

lint: install  ## ruff
	$(BIN)/ruff check src stages service deploy tests benchmarks
	$(BIN)/ruff format --check src stages service deploy tests benchmarks

bench: install  ## benchmarks: results in benchmarks/results/
	$(BIN)/python -m benchmarks
