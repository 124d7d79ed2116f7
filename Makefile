# Sextant. Quick start: `make run` runs the control plane, `make test` the tests.
# Tools the build needs are installed into bin/ (git-ignored), at the versions
# pinned in go.mod.

SHELL      := /bin/bash
BIN        := $(CURDIR)/bin
MODULE     := github.com/sextant-mesh/sextant
GO         ?= go
# go.mod asks for go 1.26.0; use the local toolchain rather than downloading one.
export GOTOOLCHAIN ?= local

FUZZTIME   ?= 15s
TEST_FLAGS ?= -race -count=1 -timeout 25m

.PHONY: all build run test vet unit fuzz gen check-gen bench-ingest clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/... ./services/...

## run: the whole control plane in one process (embedded etcd + every service).
run:
	$(GO) run ./cmd/sextant dev

## test: vet, every test with the race detector, and a short fuzz of the decoders.
test: vet unit fuzz

vet:
	$(GO) vet ./...

unit:
	$(GO) test $(TEST_FLAGS) ./...

fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=$(FUZZTIME) ./internal/telemetry

## gen: regenerate the Kitex code in kitex_gen/ from idl/.
gen: $(BIN)/kitex
	$(BIN)/kitex -module $(MODULE) idl/aggregator.thrift
	$(BIN)/kitex -module $(MODULE) idl/meshcore.thrift

## check-gen: fail when kitex_gen/ is not what `make gen` makes.
check-gen: gen
	git diff --exit-code -- kitex_gen

# kitex (with thriftgo built in) at the version go.mod's tool directive pins.
$(BIN)/kitex: go.mod
	GOBIN=$(BIN) $(GO) install github.com/cloudwego/kitex/tool/cmd/kitex
	@touch $@

## bench-ingest: the ingest benchmark, Sextant's mixer against a Gin baseline.
bench-ingest:
	$(GO) run ./loadtest/ingest -compare

clean:
	rm -rf $(BIN)
