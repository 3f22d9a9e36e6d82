# The verbs people type. Every target installs what it needs first.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: help demo test lint bench certs schemas firmware images images-multiarch validate clean

help:
	@echo "make demo   - run the whole loop on this machine (no root, no Docker) and write demo-report/"
	@echo "make test   - install what the tests need (apt-get when root, a venv) and run them"
	@echo "make lint   - ruff + mypy --strict"
	@echo "make bench  - benchmarks; JSON results in bench/results/"
	@echo "make certs  - a CA and broker/client certificates in certs/ (openssl)"
	@echo "make images - build every service image (linux/amd64)"
	@echo "make firmware - build the firmware (host, QEMU mps2, stm32f4), run its C tests, check sizes"

demo:
	@scripts/bootstrap.sh demo
	$(BIN)/edgeloop demo $(DEMO_ARGS)

test:
	@scripts/bootstrap.sh test
	$(BIN)/pytest $(PYTEST_ARGS)

lint:
	@scripts/bootstrap.sh test
	$(BIN)/ruff check services tests bench
	$(BIN)/mypy --strict
	$(BIN)/edgeloop contract check-schemas

bench:
	@scripts/bootstrap.sh test
	$(BIN)/python -m bench $(BENCH_ARGS)

certs:
	@scripts/bootstrap.sh demo
	$(BIN)/edgeloop broker certs --out certs

firmware:
	@scripts/bootstrap.sh test
	$(MAKE) -C firmware all test-host test-qemu size

schemas:
	$(BIN)/edgeloop contract write-schemas

clean:
	rm -rf build demo-report .pytest_cache .mypy_cache .ruff_cache
