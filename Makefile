# Tollgate: `make run` serves config.toml, `make test` runs every test. Both install what they
# need first (the ONNX Runtime library, Redis, the Python test clients) and are idempotent.

SHELL := /bin/bash
ORT_VERSION := 1.31.1
PYTHON ?= python3
VENV := .venv
RUNTIME_DIR := .runtime
ORT_LIB_GLOB := $(RUNTIME_DIR)/onnxruntime/capi/libonnxruntime.so.*
CARGO ?= cargo

.PHONY: run test runtime redis postgres prometheus openssl chromium wrk nginx pyenv build check bench bench-fleet bench-hits models clean-runtime

run: runtime build
	./target/debug/tollgate serve --config config.toml

build:
	$(CARGO) build --bin tollgate

test: runtime redis postgres prometheus openssl chromium pyenv
	scripts/test.sh

# The ONNX Runtime shared library, from the pinned PyPI wheel, into a project-local folder.
runtime: $(RUNTIME_DIR)/.installed-$(ORT_VERSION)
$(RUNTIME_DIR)/.installed-$(ORT_VERSION):
	$(PYTHON) -m pip install --quiet --no-deps --target $(RUNTIME_DIR) onnxruntime==$(ORT_VERSION)
	@ls $(ORT_LIB_GLOB) >/dev/null
	touch $@

# redis-server and redis-cli (which builds the tests' Redis Cluster) from apt when missing; the
# tests start and stop their own servers.
redis:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || { \
		echo "installing redis-server and redis-tools from apt"; \
		(apt-get install -y redis-server redis-tools >/dev/null 2>&1 || \
		 (apt-get update >/dev/null && apt-get install -y redis-server redis-tools >/dev/null)); }
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null

# PostgreSQL (server programs and psql) from apt when missing, for the fleet ledger's tests,
# which run their own clusters (initdb in a temporary folder as the postgres user).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v psql >/dev/null || { \
		echo "installing postgresql from apt"; \
		(apt-get install -y postgresql >/dev/null 2>&1 || \
		 (apt-get update >/dev/null && apt-get install -y postgresql >/dev/null)); }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null && command -v psql >/dev/null

# A real Prometheus for the scrape test; apt may try to start it as a service, which the tests
# do not use (they start their own on a free port).
prometheus:
	@command -v prometheus >/dev/null || { \
		echo "installing prometheus from apt"; \
		(apt-get install -y prometheus >/dev/null 2>&1 || \
		 (apt-get update >/dev/null && apt-get install -y prometheus >/dev/null)); }
	@command -v prometheus >/dev/null

# openssl, which makes the TLS tests' certificates (a CA and a server certificate each run).
openssl:
	@command -v openssl >/dev/null || { \
		echo "installing openssl from apt"; \
		(apt-get install -y openssl >/dev/null 2>&1 || \
		 (apt-get update >/dev/null && apt-get install -y openssl >/dev/null)); }
	@command -v openssl >/dev/null

# Debian's Chromium, which the dashboard test drives headless through Playwright (a browser
# download is not needed, nor possible everywhere).
chromium:
	@command -v chromium >/dev/null || { \
		echo "installing chromium from apt"; \
		(apt-get install -y chromium >/dev/null 2>&1 || \
		 (apt-get update >/dev/null && apt-get install -y chromium >/dev/null)); }
	@command -v chromium >/dev/null

# wrk, the HTTP load generator the benchmarks drive beside their own.
wrk:
	@command -v wrk >/dev/null || { \
		echo "installing wrk from apt"; \
		(apt-get install -y wrk >/dev/null 2>&1 || \
		 (apt-get update >/dev/null && apt-get install -y wrk >/dev/null)); }
	@command -v wrk >/dev/null

# nginx, the fixed-answer server the cache-hit benchmark compares the gateway with.
nginx:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { \
		echo "installing nginx from apt"; \
		(apt-get install -y nginx-light >/dev/null 2>&1 || \
		 (apt-get update >/dev/null && apt-get install -y nginx-light >/dev/null)); }
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx

# Python clients for the interop tests (tritonclient, onnxruntime, pytest) in a local venv.
pyenv: $(VENV)/.installed
$(VENV)/.installed: tests/interop/requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV) || \
		{ apt-get install -y python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	$(VENV)/bin/pip install --quiet -r tests/interop/requirements.txt
	touch $@

check:
	$(CARGO) check --workspace --all-targets

bench: runtime
	scripts/bench.sh

bench-fleet: runtime redis wrk
	scripts/bench_fleet.sh

bench-hits: runtime nginx wrk
	scripts/bench_hits.sh

# Regenerates the bundled models (needs scikit-learn and skl2onnx; not part of `make test`).
models: pyenv
	$(VENV)/bin/pip install --quiet -r scripts/requirements-models.txt
	$(VENV)/bin/python scripts/make_models.py
	$(VENV)/bin/python scripts/make_variants.py
	$(VENV)/bin/python scripts/make_alexnet.py

clean-runtime:
	rm -rf $(RUNTIME_DIR)
