# xvs — see README.md. Two commands on a fresh machine: `make demo`, `make test`.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN := bin
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.7.0
# Debian packages the tests, benchmarks and demo use.
DEB_PKGS := clang llvm libbpf-dev bpftool iproute2 ethtool tcpdump nginx keepalived haproxy wrk curl iputils-ping
CMDS := $(notdir $(wildcard cmd/*))

.PHONY: all build generate generate-check test test-race bench pgo lint deps demo clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build ./...
	@for c in $(CMDS); do echo "go build -o $(BIN)/$$c ./cmd/$$c"; $(GO) build -o $(BIN)/$$c ./cmd/$$c || exit 1; done

# Rebuild the committed BPF objects (needs clang, libbpf-dev).
generate:
	$(GO) generate ./...

# CI: the committed objects must be what the sources compile to.
generate-check: generate
	@git diff --exit-code -- bpf/ bench/ || { echo "generated BPF objects are stale: run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- bpf/ bench/)" || { git status --porcelain -- bpf/; echo "untracked generated files"; exit 1; }

# All unit and lab tests. Lab tests build namespaces and need root
# (they skip with a reason otherwise).
# The VRRP lab tests assert failover times, so they run alone, after the
# rest, on a machine no other test package is loading.
test:
	$(GO) test -count=1 -timeout 15m $$($(GO) list ./... | grep -v '/vrrp$$')
	$(GO) test -count=1 -timeout 10m ./vrrp/
	$(GO) test -count=1 -race -timeout 10m ./scheduler/...

# Microbenchmarks of the per-packet paths and schedulers, then packet replay
# and end to end against the baselines, measured in the same run (root).
bench: deps build
	$(GO) test -pgo=$(CURDIR)/cmd/xvsd/default.pgo -run '^$$' -bench 'DREstablished|DRNewFlow|EstablishedByMethod|Parse|ConnLookup$$' -benchmem -benchtime 200ms ./dataplane/
	$(GO) test -run '^$$' -bench 'Pick/.*/n=256/|MaglevBuild' -cpu 1 -benchmem -benchtime 100ms ./scheduler/
	$(GO) test -run '^$$' -bench 'PickScaling' -benchtime 200ms -count 3 ./scheduler/
	$(GO) run ./bench/cmd/xvs-bench run --quick

# xvsd is built with profile-guided optimisation (cmd/xvsd/default.pgo, which
# go build picks up by itself); the dataplane microbenchmarks above use the
# same profile. This regenerates it from those benchmarks.
pgo:
	$(GO) test -run '^$$' -bench 'DREstablished|DRNewFlow|EstablishedByMethod' -benchtime 400ms -cpuprofile cmd/xvsd/default.pgo -o /tmp/xvs-pgo.test ./dataplane/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfe[lb].go$$')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Installs the Debian packages above when any is missing.
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "deps: all present"; fi

# The LVS tutorial lab on this machine: balancing, xvsadm, VRRP failover.
demo: deps build
	$(BIN)/xvs-lab demo

clean:
	rm -rf $(BIN)
