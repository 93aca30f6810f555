# The README's two commands are `make run` and `make test`; everything else is for developers.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench proto lint openapi clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/profstore migrate --data-dir ./data
	$(BIN)/profstore serve --data-dir ./data --listen 127.0.0.1:4040

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check service tests bench migrations
	$(BIN)/ruff format --check service tests bench migrations

openapi: $(STAMP)
	$(BIN)/profstore openapi > openapi.yaml

# Regenerates service/pprof/profile_pb2.py from our own profile.proto (needs the dev extra).
proto:
	$(BIN)/pip install -q -e '.[dev]'
	cd service/pprof && ../../$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. profile.proto

clean:
	rm -rf $(VENV) data .pytest_cache
