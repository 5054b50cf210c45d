# lvms-rs. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
NAMESPACE ?= openshift-storage

.PHONY: help setup build test test-unit test-vm crds crds-check cel-cost fmt fmt-check lint run bench bench-vm

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: ## Install what a fresh Debian bookworm machine lacks (run as root)
	./hack/setup.sh

build: ## Build every crate and binary
	$(CARGO) build --workspace --all-targets --locked

test: fmt-check lint crds-check manifests-check ## Everything CI runs: format, lints, fresh CRDs and manifests, all tests including real LVM in a VM
	$(CARGO) test --workspace --locked

test-unit: ## The test suites that need no VM (real-LVM tests are skipped)
	LVMS_VM_TESTS=skip $(CARGO) test --workspace --locked

test-vm: ## Only the real-LVM tests (each boots a QEMU guest; needs `make setup`)
	$(CARGO) test --locked -p lvm --test vm_lvm
	$(CARGO) test --locked -p vg-manager --test vm_discover --test vm_plan --test vm_agent --test vm_logical_volume --test vm_csi_node --test vm_csi --test vm_raid --test vm_raw_devices --test vm_layout_fs --test vm_hygiene --test vm_crypt --test vm_health --test vm_autoextend

run: ## Run the operator out of cluster against $KUBECONFIG (CRDs from crds/ must be applied)
	$(CARGO) run --locked -p lvms-operator -- --namespace $(NAMESPACE) --health-addr 127.0.0.1:8081 --metrics-addr 127.0.0.1:8443

bench: ## Benchmarks (figures go in the closing notes, never in tests)
	$(CARGO) bench --locked -p lvms-operator --bench reconcile
	$(CARGO) bench --locked -p lvm --bench parse

bench-vm: ## Benchmarks on real LVM in a guest: CreateVolume vs raw lvcreate, 50 concurrent creates; raid1 10 GiB sync
	$(CARGO) bench --locked -p vg-manager --bench csi_create
	$(CARGO) bench --locked -p vg-manager --bench raid_sync

crds: ## Regenerate crds/ from the API types
	$(CARGO) run --quiet --locked -p crd-tools --bin crdgen -- crds

crds-check: ## Fail when crds/ differs from what the API types generate (the CEL cost verdict is a test: crd-tools/tests/check_command.rs)
	$(CARGO) run --quiet --locked -p crd-tools --bin crdgen -- --check crds

cel-cost: ## Each CEL rule of crds/ with its estimated cost against the API server's budgets
	$(CARGO) run --quiet --locked -p crd-tools --bin crd-tools -- check crds/*.yaml

.PHONY: manifests manifests-check bundle deploy undeploy

manifests: ## Regenerate config/ (but config/samples), bundle/ and bundle.Dockerfile from the Rust sources
	$(CARGO) run --quiet --locked -p lvms-operator --bin manifests -- .

manifests-check: ## Fail when config/, bundle/ or bundle.Dockerfile differ from what the generator writes
	$(CARGO) run --quiet --locked -p lvms-operator --bin manifests -- --check .

bundle: manifests ## The OLM bundle (bundle/, bundle.Dockerfile); same as `make manifests`

# The monitoring overlay needs prometheus-operator's CRDs; without them it is skipped, not failed.
MONITORING_CRDS := servicemonitors.monitoring.coreos.com prometheusrules.monitoring.coreos.com

# The images the generated manifests name (config/manager, RELATED_IMAGE_VG_MANAGER); make deploy
# puts $(IMG_OPERATOR) and $(IMG_VG_MANAGER) in their place (operator/tests/deploy.rs keeps these
# equal to the generator's).
MANIFEST_IMG_OPERATOR := ghcr.io/lvms-rs/lvms-operator:v0.1.0
MANIFEST_IMG_VG_MANAGER := ghcr.io/lvms-rs/vg-manager:v0.1.0

deploy: ## Install CRDs, RBAC and the operator (images IMG_OPERATOR, IMG_VG_MANAGER) into openshift-storage of the $KUBECONFIG cluster, and the alerts where prometheus-operator runs
	set -o pipefail; kubectl kustomize config/default \
		| sed -e 's|$(MANIFEST_IMG_OPERATOR)|$(IMG_OPERATOR)|' -e 's|$(MANIFEST_IMG_VG_MANAGER)|$(IMG_VG_MANAGER)|' \
		| kubectl apply --server-side -f -
	@if kubectl get crd $(MONITORING_CRDS) >/dev/null 2>&1; then \
		kubectl apply --server-side -k config/prometheus; \
	else \
		echo "no prometheus-operator CRDs: config/prometheus (scraping, alerts) not applied"; \
	fi
	@echo "now create an LVMCluster, e.g. kubectl apply -f config/samples/lvm_v1alpha1_lvmcluster.yaml"

# Refused while an LVMCluster exists: without the operator its finalizers are never released,
# so the CRDs and the namespace would hang in deletion and every node would keep its VG.
undeploy: ## Remove what `make deploy` installed; refused while an LVMCluster exists (delete it first)
	@if [ -n "$$(kubectl get lvmclusters.lvm.topolvm.io -A -o name 2>/dev/null)" ]; then \
		echo "make undeploy: an LVMCluster exists; delete it and wait until it is gone (kubectl delete lvmcluster --all -n $(NAMESPACE) --wait), then run make undeploy again" >&2; \
		exit 1; \
	fi
	@if kubectl get crd $(MONITORING_CRDS) >/dev/null 2>&1; then \
		kubectl delete -k config/prometheus --ignore-not-found; \
	fi
	kubectl delete -k config/default --ignore-not-found

fmt: ## Format the code
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint: ## Clippy over every target, warnings are errors
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings

# Container images (images/*.Dockerfile, built from the repository root).
CONTAINER_ENGINE ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)
IMAGE_TAG ?= v0.1.0
IMG_OPERATOR ?= ghcr.io/lvms-rs/lvms-operator:$(IMAGE_TAG)
IMG_VG_MANAGER ?= ghcr.io/lvms-rs/vg-manager:$(IMAGE_TAG)

.PHONY: images push container-engine
container-engine:
	@if [ -z "$(CONTAINER_ENGINE)" ]; then \
		echo "make: no container engine found; install podman or docker, or set CONTAINER_ENGINE=..." >&2; \
		exit 1; \
	fi

images: container-engine ## Build the lvms-operator and vg-manager images with podman or docker (IMG_OPERATOR, IMG_VG_MANAGER)
	$(CONTAINER_ENGINE) build -f images/lvms-operator.Dockerfile -t $(IMG_OPERATOR) .
	$(CONTAINER_ENGINE) build -f images/vg-manager.Dockerfile -t $(IMG_VG_MANAGER) .

push: container-engine ## Push the two images (IMG_OPERATOR, IMG_VG_MANAGER) with podman or docker
	$(CONTAINER_ENGINE) push $(IMG_OPERATOR)
	$(CONTAINER_ENGINE) push $(IMG_VG_MANAGER)
