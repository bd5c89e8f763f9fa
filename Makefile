# Thin wrapper over CMake. `make run` and `make test` are the two commands a
# newcomer needs; both install missing Debian packages first (scripts/deps.sh).
BUILD      ?= build
SAN_BUILD  ?= build-san
BENCH_BUILD ?= build-bench
CC         ?= cc
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
ARGS       ?=
FUZZ_SECONDS ?= 10
THIRD_PARTY := $(CURDIR)/build/third_party
CIVETWEB    := -DCIVETWEB_DIR=$(THIRD_PARTY)/civetweb

.PHONY: all deps build run test test-fast test-san fuzz fuzz-long soak memcheck bench package clean \
	format build-all test-static dist-install-script

all: build

deps:
	@scripts/deps.sh $(THIRD_PARTY)

# configure DIR COMPILER EXTRA-FLAGS: (re)configure when missing or when the
# compiler changed since the last configure.
define configure
	@if [ -f $(1)/CMakeCache.txt ] && ! grep -qx 'CMAKE_C_COMPILER:[A-Z]*=$(shell command -v $(2))' $(1)/CMakeCache.txt; then \
		rm -rf $(1)/CMakeCache.txt $(1)/CMakeFiles; fi
	@cmake -S . -B $(1) -DCMAKE_C_COMPILER=$(shell command -v $(2)) $(CIVETWEB) $(3) >/dev/null
endef

build: deps
	$(call configure,$(BUILD),$(CC),)
	@cmake --build $(BUILD) -j $(JOBS)
	@echo "built $(BUILD)/vm-agent"

run: build
	$(BUILD)/vm-agent run $(ARGS)

# Everything: the normal build, the static (musl) release binaries in a bare
# chroot (test-static), then the same suite under ASan+UBSan (clang), with every
# libFuzzer target run for FUZZ_SECONDS on its seed corpus.
test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	$(MAKE) --no-print-directory test-static
	$(MAKE) --no-print-directory test-san

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -LE slow

test-san: deps
	$(call configure,$(SAN_BUILD),clang,-DCMAKE_BUILD_TYPE=Debug -DVMA_SANITIZE=ON -DVMA_FUZZ=ON -DVMA_FUZZ_SECONDS=$(FUZZ_SECONDS))
	@cmake --build $(SAN_BUILD) -j $(JOBS)
	cd $(SAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --output-on-failure -j $(JOBS)

fuzz: deps
	$(call configure,$(SAN_BUILD),clang,-DCMAKE_BUILD_TYPE=Debug -DVMA_SANITIZE=ON -DVMA_FUZZ=ON -DVMA_FUZZ_SECONDS=$(FUZZ_SECONDS))
	@cmake --build $(SAN_BUILD) -j $(JOBS)
	cd $(SAN_BUILD) && ctest --output-on-failure -L fuzz

# Every libFuzzer target at depth: FUZZ_RUNS executions each (or
# FUZZ_LONG_SECONDS, whichever comes first), then new coverage is merged into
# the committed corpus (tests/fuzz/corpus/; review and commit it). A crash
# leaves crash-* in $(SAN_BUILD)/fuzz-long/ and fails the target.
FUZZ_RUNS ?= 10000000
FUZZ_LONG_SECONDS ?= 1800
fuzz-long: deps
	$(call configure,$(SAN_BUILD),clang,-DCMAKE_BUILD_TYPE=Debug -DVMA_SANITIZE=ON -DVMA_FUZZ=ON -DVMA_FUZZ_SECONDS=$(FUZZ_SECONDS))
	@cmake --build $(SAN_BUILD) -j $(JOBS)
	SAN_BUILD=$(CURDIR)/$(SAN_BUILD) FUZZ_RUNS=$(FUZZ_RUNS) FUZZ_LONG_SECONDS=$(FUZZ_LONG_SECONDS) \
		tests/fuzz/fuzz_long.sh

# The fault suite's long forms (docs/reliability.md): 1 GiB transfers, a
# 10-minute soak, 10 minutes of refused reconnects, 5 minutes under valgrind.
soak: build
	cd tests/e2e && env GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off \
		GOCACHE=$(CURDIR)/$(BUILD)/gocache CGO_ENABLED=0 VM_AGENT_BIN=$(CURDIR)/$(BUILD)/vm-agent \
		VMA_SOAK=1 go test -count=1 -v -timeout 120m -run 'TestFault' ./...

# valgrind memcheck of the agent (gcc build) under tunnel and probe load,
# stopped with SIGTERM; fails on any memcheck error or leak. The short form
# (6 s) also runs in `make test`; MEMCHECK_LONG=1 runs the soak's longer load
# (5 minutes; VMA_MEMCHECK_DURATION sets it, 20 minutes at most).
memcheck: build
	cd tests/e2e && env GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off \
		GOCACHE=$(CURDIR)/$(BUILD)/gocache CGO_ENABLED=0 VM_AGENT_BIN=$(CURDIR)/$(BUILD)/vm-agent \
		VMA_SOAK=$(if $(MEMCHECK_LONG),1,) go test -count=1 -v -timeout 30m -run 'TestFaultValgrindMemcheck' ./...

bench: deps
	$(call configure,$(BENCH_BUILD),$(CC),-DCMAKE_BUILD_TYPE=Release)
	@cmake --build $(BENCH_BUILD) -j $(JOBS)
	@scripts/deps.sh --static $(THIRD_PARTY)
	DIST=$(DIST) JOBS=$(JOBS) scripts/build-static.sh amd64
	BUILD_DIR=$(CURDIR)/$(BENCH_BUILD) VMA_STATIC_BIN=$(DIST)/vm-agent-linux-amd64 tests/bench/run.sh

# The Debian package (CPack, cmake/package.cmake) from the normal build.
package: build
	cd $(BUILD) && cpack -G DEB
	@ls $(BUILD)/vm-agent_*.deb

# Release artifacts in dist/: the static (musl) binaries for amd64 and arm64
# (cross-built) and the Debian package,
# each with a .sha256 and, with SIGN_KEY=<minisign secret key file>, a .minisig
# (docs/static-builds.md). The static dependencies are cached outside the tree.
DIST ?= $(CURDIR)/dist
build-all: package
	@scripts/deps.sh --static $(THIRD_PARTY)
	DIST=$(DIST) JOBS=$(JOBS) scripts/build-static.sh amd64
	DIST=$(DIST) JOBS=$(JOBS) scripts/build-static.sh arm64
	@cp $(BUILD)/vm-agent_*.deb $(DIST)/
	@scripts/dist-sign.sh $$(ls $(DIST)/vm-agent_*.deb)
	@$(MAKE) --no-print-directory dist-install-script
	@ls -l $(DIST)

# dist/install.sh: installers/install.sh with the public key of SIGN_KEY pinned
# (without SIGN_KEY it keeps the placeholder and refuses to run). RELEASE_URL:
# the default base URL written into it.
dist-install-script:
	@mkdir -p $(DIST)
	@set -e; k=@VMA_MINISIGN_PUBKEY@; \
	if [ -n "$(SIGN_KEY)" ]; then d=$$(mktemp -d); trap 'rm -rf "$$d"' EXIT; \
	    minisign -R -s "$(SIGN_KEY)" -p "$$d/key.pub" >/dev/null; k=$$(tail -n1 "$$d/key.pub"); fi; \
	sed -e "s|@VMA_MINISIGN_PUBKEY@|$$k|" \
	    -e "s|@VMA_RELEASE_URL@|$${RELEASE_URL:-@VMA_RELEASE_URL@}|" installers/install.sh > $(DIST)/install.sh
	@scripts/dist-sign.sh $(DIST)/install.sh

# The static binaries in a bare chroot (tests/e2e/static_build_test.go): amd64
# natively, arm64 under qemu-user-static; and vm-agent built with clang -Werror
# against the same cached dependencies, for both (docs/static-builds.md).
test-static: build
	@scripts/deps.sh --static $(THIRD_PARTY)
	@set -e; for a in amd64 arm64; do \
	  DIST=$(DIST) JOBS=$(JOBS) scripts/build-static.sh $$a; \
	  JOBS=$(JOBS) scripts/build-static.sh --cc clang $$a; \
	  (cd tests/e2e && env GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off \
	    GOCACHE=$(CURDIR)/$(BUILD)/gocache CGO_ENABLED=0 VM_AGENT_BIN=$(CURDIR)/$(BUILD)/vm-agent \
	    VMA_STATIC_BIN=$(DIST)/vm-agent-linux-$$a VMA_STATIC_ARCH=$$a \
	    go test -tags static -count=1 -v -timeout 5m -run 'TestStatic' ./...); \
	done
	@$(MAKE) --no-print-directory test-docker VERSION=$(or $(VERSION),0.0.0-test)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD)/CMakeCache.txt $(BUILD)/CMakeFiles $(BUILD)/vm-agent $(SAN_BUILD) $(BENCH_BUILD)

# OCI images FROM scratch with the static binary (amd64, arm64, and an index of both) and a CA bundle
# (scripts/docker-build.sh, docs/static-builds.md).
docker-build:
	DIST=$(DIST) JOBS=$(JOBS) VERSION=$(VERSION) scripts/docker-build.sh

.PHONY: docker-build

# The image of docker-build run by podman on loopback (tests/e2e/static_image_test.go).
test-docker: docker-build
	@command -v podman >/dev/null || apt-get install -y podman || { apt-get update && apt-get install -y podman; }
	cd tests/e2e && env GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off \
	  GOCACHE=$(CURDIR)/$(BUILD)/gocache CGO_ENABLED=0 VM_AGENT_BIN=$(CURDIR)/$(BUILD)/vm-agent \
	  VMA_OCI_IMAGE=$(DIST)/vm-agent-$(VERSION)-amd64.oci.tar VMA_OCI_INDEX=$(DIST)/vm-agent-$(VERSION).oci.tar \
	  go test -tags static -count=1 -v -timeout 5m -run 'TestDockerImage' ./...

.PHONY: test-docker
