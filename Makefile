# pitstop: `make demo` runs the end-to-end demo, `make test` the whole test suite.
# Both create .venv, install pinned dependencies (constraints.txt) and build the
# extension in release mode (one build serves tests, demo and benchmarks).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export VIRTUAL_ENV := $(abspath $(VENV))
export PIP_CONSTRAINT := $(abspath constraints.txt)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help dev demo test test-rust test-python lint bench bench-store bench-online bench-predict bench-spark bench-agg bench-monitor bench-stream bench-serve bench-rust clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

$(VENV)/.deps: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q maturin pytest hypothesis pyarrow numpy pandas polars duckdb lmdb \
		deltalake onnxruntime onnx scikit-learn skl2onnx scipy redis hiredis
	$(PIP) install -q pyspark  # the spark extra (pitstop[spark]); needs Java 17+ to run
	touch $@

dev: $(VENV)/.deps ## build the extension (release) into .venv
	$(VENV)/bin/maturin develop --release --quiet

demo: dev ## run the end-to-end demo on an embedded store
	$(PY) -m pitstop demo

test: test-rust test-python ## run the whole test suite (cargo test + pytest)

test-rust: ## Rust unit tests of the kernels (no Python involved)
	cargo test --quiet --features serve

test-python: dev ## pytest, hypothesis included
	$(PY) -m pytest -q

lint: $(VENV)/.deps ## rustfmt, clippy
	cargo fmt --check
	cargo clippy --quiet --features python,serve --all-targets -- -D warnings

bench: dev ## benchmark harness against peers (size S)
	$(PY) -m benches.pit --size S

bench-store: dev ## training data from the store vs Feast (own venv) and DuckDB
	test -x .venv-feast/bin/python || ($(PYTHON) -m venv .venv-feast && .venv-feast/bin/pip install -q "feast[duckdb]")
	$(PY) -m benches.store --feast-python .venv-feast/bin/python

bench-predict: dev ## end-to-end predict vs the same pipeline in plain Python
	$(PY) -m benches.predict

bench-spark: dev ## the join on local Spark: kernel vs pandas merge_asof per bucket (needs Java 17+)
	$(PY) -m benches.spark

bench-agg: dev ## window aggregations vs polars and DuckDB: 10M events, 1M labels (minutes, GBs of RAM)
	$(PY) -m benches.agg --size L --skew --skew-engines pitstop,polars --online

bench-monitor: dev ## drift: pitstop vs a scipy loop and Evidently (own venv, pandas<3); 1M x 200k x 24 and 100k x 100k x 500
	test -x .venv-evidently/bin/python || ($(PYTHON) -m venv .venv-evidently && PIP_CONSTRAINT= .venv-evidently/bin/pip install -q evidently "pandas<3" pyarrow)
	$(PY) -m benches.monitor --wide --evidently-python .venv-evidently/bin/python

bench-online: dev ## online store: pitstop vs python-lmdb, SQLite, Redis (if redis-server is installed)
	$(PIP) install -q redis
	$(PY) -m benches.online

bench-stream: dev ## streaming from Redis on loopback: freshness, sustained ingest, push vs Feast (own venv; needs redis-server)
	test -x .venv-feast/bin/python || ($(PYTHON) -m venv .venv-feast && PIP_CONSTRAINT= .venv-feast/bin/pip install -q "feast[duckdb]")
	$(PY) -m benches.stream --feast-python .venv-feast/bin/python

bench-serve: dev ## pitstop serve vs FastAPI + python-lmdb and feast serve (own venv) over loopback, wrk (Debian)
	command -v wrk >/dev/null || (echo "bench-serve needs wrk: apt-get install -y wrk" && false)
	$(PIP) install -q fastapi uvicorn lmdb
	test -x .venv-feast/bin/python || ($(PYTHON) -m venv .venv-feast && .venv-feast/bin/pip install -q "feast[duckdb]")
	$(PY) -m benches.serve --feast-python .venv-feast/bin/python

bench-rust: ## criterion benches of the kernels
	cargo bench --bench join

clean: ## remove build outputs and the virtual environment
	rm -rf target $(VENV)
