# Local images, no container registry needed (included by the Makefile; alone:
# make -f images/images.mk image-cpu). docs/deploy.md, "Local images with podman".
SHELL := /bin/bash
TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# the torch wheel pip installs on this machine (its find-links); empty: from the CPU index
TORCH_WHEELS ?= $(firstword $(PIP_FIND_LINKS))

.PHONY: image-tools image-cpu images-local

image-tools: ## podman, runc and mmdebstrap (Debian packages, installed when root and missing)
	@bash images/install-tools.sh

image-cpu: image-tools ## build localhost/cloudml-cpu:$(TAG) here (bookworm base by mmdebstrap); digest, size
	@start=$$(date +%s); \
	TORCH_WHEELS='$(TORCH_WHEELS)' bash images/build.sh --local '$(TAG)' cpu && \
	echo "image-cpu: $$(( $$(date +%s) - start )) s"

images-local: image-tools ## build localhost/cloudml-{cpu,gpu}:$(TAG) (the gpu target on the CPU base and wheel)
	@start=$$(date +%s); \
	TORCH_WHEELS='$(TORCH_WHEELS)' bash images/build.sh --local '$(TAG)' cpu gpu && \
	echo "images-local: $$(( $$(date +%s) - start )) s"
