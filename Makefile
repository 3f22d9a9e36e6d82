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
	@echo "make images - build every service image (linux/amd64); LOCAL_BASE=1 for a debootstrapped base"
	@echo "make images-multiarch - linux/amd64 + linux/arm64 with buildx, pushed to IMAGE_PREFIX"
	@echo "make validate - render and validate k3s manifests, lint Dockerfiles, check rules and queries"
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

# ---- images: built from a host wheelhouse (pip --no-index inside), so no build needs the
# network. BASE/PYTHON_BASE default to the upstream images; LOCAL_BASE=1 builds on a
# debootstrapped Debian imported with `docker import` (no registry needed at all).
DOCKER ?= docker
IMAGE_PREFIX ?= edgeloop
IMAGE_TAG ?= 0.1.0
PLATFORMS ?= linux/amd64,linux/arm64
PUSH ?= --push
EDGE_IMAGES := broker collector ingest inference
ifeq ($(LOCAL_BASE),1)
BASE_ARGS := --build-arg BASE=edgeloop/base:bookworm --build-arg PYTHON_BASE=edgeloop/base:bookworm
endif

images:
	@scripts/bootstrap.sh test
	scripts/wheelhouse.sh edge
	scripts/wheelhouse.sh train
	@if [ "$(LOCAL_BASE)" = 1 ]; then scripts/build_base_image.sh --import; fi
	for img in $(EDGE_IMAGES); do \
	  $(DOCKER) build $(BASE_ARGS) -f services/$$img/Dockerfile \
	    -t $(IMAGE_PREFIX)/$$img:$(IMAGE_TAG) . || exit 1; \
	done
	$(DOCKER) build $(BASE_ARGS) -f services/trainer/Dockerfile --target registry \
	  -t $(IMAGE_PREFIX)/registry:$(IMAGE_TAG) .
	$(DOCKER) build $(BASE_ARGS) -f services/trainer/Dockerfile --target trainer \
	  -t $(IMAGE_PREFIX)/trainer:$(IMAGE_TAG) .
	@$(DOCKER) images --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep '^$(IMAGE_PREFIX)/'

# Needs docker buildx with QEMU binfmt for arm64, and a registry to push the manifest
# lists to (IMAGE_PREFIX=registry.example.org/edgeloop). Edge images for both
# platforms; the trainer for linux/amd64 only (it runs on the cloud node).
images-multiarch:
	@scripts/bootstrap.sh test
	scripts/wheelhouse.sh edge
	scripts/wheelhouse.sh edge arm64
	scripts/wheelhouse.sh train
	for img in $(EDGE_IMAGES); do \
	  $(DOCKER) buildx build --platform $(PLATFORMS) $(PUSH) -f services/$$img/Dockerfile \
	    -t $(IMAGE_PREFIX)/$$img:$(IMAGE_TAG) . || exit 1; \
	done
	$(DOCKER) buildx build --platform $(PLATFORMS) $(PUSH) -f services/trainer/Dockerfile \
	  --target registry -t $(IMAGE_PREFIX)/registry:$(IMAGE_TAG) .
	$(DOCKER) buildx build --platform linux/amd64 $(PUSH) -f services/trainer/Dockerfile \
	  --target trainer -t $(IMAGE_PREFIX)/trainer:$(IMAGE_TAG) .

validate:
	@scripts/bootstrap.sh test
	$(BIN)/pytest -q tests/integration/test_deploy_validate.py tests/integration/test_deploy_queries.py

schemas:
	$(BIN)/edgeloop contract write-schemas

clean:
	rm -rf build demo-report .pytest_cache .mypy_cache .ruff_cache
