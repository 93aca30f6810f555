# The README's two commands are `make run` and `make test`; everything else is for developers.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench proto lint openapi clean ui

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-install when the project's dependencies change.
$(VENV)/.run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.run

run: $(VENV)/.run
	sh deploy/run-local.sh $(BIN)

test: $(VENV)/.test
	$(BIN)/python -m pytest -q

bench: $(VENV)/.test
	$(BIN)/python -m bench

# Query latency over days of a synthetic fleet (bench/query.py; --services/--days to scale it).
.PHONY: bench-query
bench-query: $(VENV)/.test
	$(BIN)/python -m bench.query

# Series matching and label lookups with 100,000 series: the label index vs the label-map scan and the Python scan it replaced (bench/selectors.py).
.PHONY: bench-selectors
bench-selectors: $(VENV)/.test
	$(BIN)/python -m bench.selectors

# The collector scraping 200 simulated Go services on loopback (bench/targets_sim.py) for 75 s.
.PHONY: bench-collector
bench-collector: $(VENV)/.test
	$(BIN)/python -m bench.collector

# Pushing small Go CPU profiles to a real server: 32 concurrent clients, then one sequential client, beside the parse floor (bench/push.py).
.PHONY: bench-push
bench-push: $(VENV)/.test
	$(BIN)/python -m bench.push

# One node on a DuckDB file vs one node on a DuckLake (local directory, moto S3) vs three nodes on one lake, same fleet: ingest rate and CPU, commits, freshness, files per table, queries after maintenance (bench/cluster.py; --minutes 30 for the file-count soak).
.PHONY: bench-cluster
bench-cluster: $(VENV)/.test
	$(BIN)/python -m bench.cluster

# The web UI in headless Chromium: an 8,192-node flame graph's draw and zoom, the first page, asset sizes (bench/ui.py).
.PHONY: bench-ui
bench-ui: $(VENV)/.test
	$(BIN)/python -m bench.ui

# Detection quality on streams drawn from real profiles: detection rate and delay beside an oracle, false
# positives, share artifacts, leaks; streams on --jobs 2 processes (about 35-40 min on 2 idle cores).
# The real Go program twice for 30 min (both cores, run alone): python -m bench.regressions --sections gopair
.PHONY: bench-regressions
bench-regressions: $(VENV)/.test
	$(BIN)/python -m bench.regressions

lint: $(VENV)/.test
	$(BIN)/ruff check service tests bench migrations
	$(BIN)/ruff format --check service tests bench migrations
	$(BIN)/mypy service

openapi: $(VENV)/.run
	$(BIN)/profstore openapi > openapi.yaml

# Regenerates the Python modules of our own .proto files (needs the dev extra): pprof's format, and
# Pyroscope's API (service/protocols) with Connect client stubs (*_connect.py, used by the tests).
PROTOS := service/pprof/profile.proto $(wildcard service/protocols/*/v1/*.proto)
proto: | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,test]'
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. \
		--plugin=protoc-gen-connectrpc=$(BIN)/protoc-gen-connectrpc --connectrpc_out=. \
		--connectrpc_opt=protobuf=google $(PROTOS)
	rm -f service/pprof/profile_connect.py service/protocols/types/v1/types_connect.py

clean:
	rm -rf $(VENV) data .pytest_cache

# The web UI's vendored libraries (ui/package.json, pinned in ui/package-lock.json), copied with their
# licences into service/ui/static/vendor, which is committed: only rebuilding them needs npm.
ui:
	cd ui && npm ci --no-audit --no-fund
	sh ui/vendor.sh
