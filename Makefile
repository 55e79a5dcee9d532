# apisonar — run `make help` for the targets.

GO        ?= go
BIN       ?= bin/apisonar
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
TEST_TIMEOUT ?= 45m
# Debian packages the build and the integration tests drive (real peers).
# An OpenAPI validator we did not write checks the generated inventory.
NPM_VALIDATOR = @seriousme/openapi-schema-validator@2.11.0
DEB_PACKAGES = clang llvm libbpf-dev bpftool curl tcpdump tshark nginx nghttp2-client nghttp2-server \
               python3 python3-grpcio wrk iproute2 netcat-openbsd openssl prometheus

.PHONY: help generate build test bench lint deps tracefs fuzz clean

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

generate: ## regenerate the eBPF objects and Go bindings (needs clang, libbpf-dev)
	$(GO) generate ./bpf/...

build: ## build bin/apisonar (static, no cgo)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/apisonar

test: deps tracefs ## run every test; as root the eBPF tests run for real (CI=true: they must)
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

bench: ## run the benchmarks (medians of 5 runs, with allocations)
	$(GO) test -run '^$$' -bench . -benchmem -count=5 ./parser/... ./baseline/... ./agent/...

lint: ## gofmt and go vet must be clean
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfel.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-30s} $$pkg || exit 1; \
	  done; \
	done

deps: ## install the Debian packages the tests drive, when root and missing
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else echo "missing Debian packages (tests that need them will skip):$$missing"; fi; \
	fi
	@if ! command -v validate-api >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v npm >/dev/null 2>&1; then \
	  echo "installing the independent OpenAPI validator"; \
	  npm install -g --no-fund --no-audit $(NPM_VALIDATOR) >/dev/null; fi

tracefs: ## mount tracefs when root and it is missing
	@if [ "$$(id -u)" = 0 ] && [ ! -d /sys/kernel/tracing/events/syscalls ]; then \
	  mount -t tracefs tracefs /sys/kernel/tracing; fi

clean: ## remove build output
	rm -rf bin
