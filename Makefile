# Sextant. Quick start: `make run` runs the control plane, `make test` the tests.
# Tools the build needs are installed into bin/ (git-ignored), at the versions
# pinned in go.mod.

SHELL      := /bin/bash
BIN        := $(CURDIR)/bin
MODULE     := github.com/sextant-mesh/sextant
GO         ?= go
# go.mod asks for go 1.26.0; use the local toolchain rather than downloading one.
export GOTOOLCHAIN ?= local

# The repository's Go modules (go.work): the control plane (.), the contract
# (api) and the SDK with its adapters, each a module of its own.
SDK_PKGS   := ./sdk/... ./sdk/kitexsdk/... ./sdk/hertzsdk/... ./sdk/natssdk/...
PKGS       := ./... ./api/... $(SDK_PKGS)

FUZZTIME   ?= 15s
TEST_FLAGS ?= -race -count=1 -timeout 25m

.PHONY: all build run demo test test-long vet sdk-check unit fuzz gen check-gen bench-ingest bench-discovery bench-configwatch lbsim clean chaos chaos-short chaos-build

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/... ./services/...

## run: the whole control plane in one process (embedded etcd + every service),
## with influxd on 127.0.0.1:7786 when it can be built (else without time series).
run: influxd-if-possible
	$(GO) run ./cmd/sextant dev

## demo: `make run` plus the demo service, front and load driver: a command of
## its own (examples/demo/cmd/demo-dev), so that the sextant binary does not
## link the demo. It takes the flags of `sextant dev` and --demo-addr.
demo: influxd-if-possible
	$(GO) run ./examples/demo/cmd/demo-dev

# influxd is a nice-to-have for `make run`: a failed build leaves it off.
.PHONY: influxd-if-possible
influxd-if-possible:
	@$(MAKE) --no-print-directory $(BIN)/influxd || echo "influxd could not be built: running without time series"

# influxd 1.8.10, whose 2.x compatibility API the services write to.
$(BIN)/influxd:
	GOBIN=$(BIN) $(GO) install github.com/influxdata/influxdb/cmd/influxd@v1.8.10

## test: vet, the SDK's builds and module graph, every test with the race
## detector, a short fuzz of the decoders, and the chaos suite's short form.
test: helm-check vet sdk-check unit fuzz chaos-short

vet:
	$(GO) vet $(PKGS)

# The overload chain (examples/overload) runs its services, its load and
# the control plane in one process, in real time, at twice its bottleneck's
# capacity: it needs most of a 2-core machine's CPU under the race detector.
# It runs alone, after the other packages, whose tests would otherwise take
# that CPU (go test runs packages in parallel): starved, the chain's
# requests time out before any service sees them (docs/overload.md).
ALONE_PKGS := ./examples/overload

unit: $(BIN)/influxd chromium-if-possible
	$(GO) test $(TEST_FLAGS) $(filter-out $(MODULE)/examples/overload,$(shell $(GO) list $(PKGS)))
	$(GO) test $(TEST_FLAGS) $(ALONE_PKGS)
	# The poll port's portable loop (macOS, the BSDs), built here by its tag.
	$(GO) test $(TEST_FLAGS) -tags portablepoll -run 'Poll|Answer' ./services/mesh-core/core

## chromium: the headless browser of the web console's browser test
## (tests/console), from Debian's packages (apt-get, as root or with sudo),
## when no chromium is on PATH.
.PHONY: chromium chromium-if-possible
chromium:
	@if command -v chromium >/dev/null; then echo "chromium: $$(command -v chromium)"; else \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends chromium; \
	fi

# The console's browser test skips without chromium, saying so: a failed
# install leaves it skipped rather than failing the other tests.
chromium-if-possible:
	@$(MAKE) --no-print-directory chromium || echo "chromium could not be installed: the console's browser test (tests/console) will skip"

## sdk-check: the contract and SDK modules build and vet alone (outside the
## workspace: none of their code or tests imports the control plane), for
## linux, darwin and windows, and a throwaway module that imports them gets
## none of the control plane's dependencies (go test ./tests/sdkgraph).
sdk-check:
	for m in api sdk sdk/kitexsdk sdk/hertzsdk sdk/natssdk; do (cd $$m && GOWORK=off $(GO) vet ./...) || exit 1; done
	GOOS=linux $(GO) build ./api/... $(SDK_PKGS)
	GOOS=darwin $(GO) build ./api/... $(SDK_PKGS)
	GOOS=windows $(GO) build ./api/... $(SDK_PKGS)
	$(GO) test -count=1 ./tests/sdkgraph

fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=$(FUZZTIME) ./internal/telemetry
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) ./internal/httphead

## gen: regenerate the Kitex code in kitex_gen/ from idl/.
gen: $(BIN)/kitex
	$(BIN)/kitex -module $(MODULE) idl/aggregator.thrift
	$(BIN)/kitex -module $(MODULE) idl/meshcore.thrift
	$(BIN)/kitex -module $(MODULE) examples/demo/idl/comment.thrift

## check-gen: fail when kitex_gen/ is not what `make gen` makes.
check-gen: gen
	git diff --exit-code -- kitex_gen

# kitex (with thriftgo built in) at the version go.mod's tool directive pins.
$(BIN)/kitex: go.mod
	GOBIN=$(BIN) $(GO) install github.com/cloudwego/kitex/tool/cmd/kitex
	@touch $@

## test-long: the long real-time end-to-end tests (a few minutes; not in `make test`).
test-long: $(BIN)/influxd
	$(GO) test -race -count=1 -timeout 20m ./examples/demo -run 'TestLong' -long -v
	$(GO) test -count=1 -timeout 20m ./examples/overload -run 'TestOverloadChain' -long -v

## chaos: the chaos suite (cmd/chaos, docs/development.md): the services as
## processes with a three-member etcd cluster, an SDK load, one fault at a
## time, 15 scenarios; ends with "N passed, N failed" (about 5 minutes).
## CHAOS_FLAGS adds flags, e.g. CHAOS_FLAGS='-run etcd -keep'; CHAOS_BIN
## builds and runs from another folder than the (perhaps shared) bin/chaos.
CHAOS_BIN   := $(BIN)/chaos
CHAOS_FLAGS ?=
chaos: chaos-build $(BIN)/influxd
	$(CHAOS_BIN)/chaos $(CHAOS_FLAGS)

## chaos-short: the chaos suite's short form, two scenarios (about 55 s with the build), in `make test`.
chaos-short: chaos-build
	$(CHAOS_BIN)/chaos -short $(CHAOS_FLAGS)

# Each service's binary, built once, beside the suite's own.
chaos-build:
	$(GO) build -o $(CHAOS_BIN)/ ./services/... ./cmd/chaos

## lbsim: the load-balancing simulator, every scenario and strategy side by
## side in simulated time (docs/lb-quality.md); about 15 s.
lbsim:
	$(GO) run ./loadtest/lbsim

## bench-ingest: the ingest benchmark, Sextant's mixer against a Gin baseline.
bench-ingest:
	$(GO) run ./loadtest/ingest -compare

## bench-discovery: mesh-core's long-poll fan-out to 10,000 data planes
## (docs/benchmarks.md); about 40 s.
bench-discovery:
	$(GO) run ./loadtest/discovery -pollers 10000

## bench-configwatch: one config change among 10,000 configs and 10,000 held
## watches (docs/benchmarks.md); about 40 s.
bench-configwatch:
	$(GO) run ./loadtest/configwatch -configs 10000 -watches 10000 -watch-services 1000

clean:
	rm -rf $(BIN)

## helm-check: lint the Helm chart, render it (default, production, bundled and
## test values, and with a sample dashboard) into $(HELM_OUT), and decode every
## rendered object strictly into its Kubernetes type (go test ./deploy/helm/...).
.PHONY: helm-check
HELM_VERSION := v3.22.0
HELM_CHART   := deploy/helm/sextant
HELM_OUT     := $(BIN)/helm-check
# helm keeps its cache, config and plugins here, not in $HOME; it needs no network.
HELM_ENV     := HELM_CACHE_HOME=$(HELM_OUT)/home/cache HELM_CONFIG_HOME=$(HELM_OUT)/home/config HELM_DATA_HOME=$(HELM_OUT)/home/data
HELM_RUN     := $(HELM_ENV) $(BIN)/helm
# A helm built by go install believes it talks to Kubernetes 1.20; the chart
# needs 1.30 or later (kubeVersion in Chart.yaml).
HELM_KUBE    := --kube-version 1.35.0
HELM_RELEASE := --namespace sextant sextant $(HELM_KUBE)

helm-check: $(BIN)/helm
	rm -rf $(HELM_OUT)/rendered-*.yaml $(HELM_OUT)/dashboard-chart
	mkdir -p $(HELM_OUT)/home/cache $(HELM_OUT)/home/config $(HELM_OUT)/home/data
	$(HELM_RUN) lint --strict $(HELM_KUBE) $(HELM_CHART)
	$(HELM_RUN) lint --strict $(HELM_KUBE) $(HELM_CHART) -f deploy/helm/values-production.yaml
	$(HELM_RUN) lint --strict $(HELM_KUBE) $(HELM_CHART) -f deploy/helm/values-bundled.yaml
	$(HELM_RUN) template $(HELM_RELEASE) $(HELM_CHART) > $(HELM_OUT)/default.tmp
	mv $(HELM_OUT)/default.tmp $(HELM_OUT)/rendered-default.yaml
	$(HELM_RUN) template $(HELM_RELEASE) $(HELM_CHART) -f deploy/helm/values-production.yaml > $(HELM_OUT)/production.tmp
	mv $(HELM_OUT)/production.tmp $(HELM_OUT)/rendered-production.yaml
	$(HELM_RUN) template $(HELM_RELEASE) $(HELM_CHART) -f deploy/helm/values-bundled.yaml > $(HELM_OUT)/bundled.tmp
	mv $(HELM_OUT)/bundled.tmp $(HELM_OUT)/rendered-bundled.yaml
	$(HELM_RUN) lint --strict $(HELM_KUBE) $(HELM_CHART) -f deploy/helm/testdata/values-options.yaml
	$(HELM_RUN) template $(HELM_RELEASE) $(HELM_CHART) -f deploy/helm/testdata/values-options.yaml > $(HELM_OUT)/options.tmp
	mv $(HELM_OUT)/options.tmp $(HELM_OUT)/rendered-options.yaml
	$(HELM_RUN) lint --strict $(HELM_KUBE) $(HELM_CHART) -f deploy/helm/testdata/values-etcd-access.yaml
	$(HELM_RUN) template $(HELM_RELEASE) $(HELM_CHART) -f deploy/helm/testdata/values-etcd-access.yaml > $(HELM_OUT)/etcd-access.tmp
	mv $(HELM_OUT)/etcd-access.tmp $(HELM_OUT)/rendered-etcd-access.yaml
	@# etcd TLS with the bundled etcd (plain HTTP) is refused.
	$(HELM_RUN) template $(HELM_RELEASE) $(HELM_CHART) -f deploy/helm/values-bundled.yaml \
		--set etcd.tls.enabled=true --set etcd.tls.existingSecret=etcd-client-tls 2>&1 | grep -q "the bundled etcd serves plain HTTP"
	@# A copy of the chart (symlinks resolved) with one sample dashboard: the
	@# dashboards ConfigMap must carry it.
	cp -RL $(HELM_CHART) $(HELM_OUT)/dashboard-chart
	echo '{"title": "helm-check sample", "panels": []}' > $(HELM_OUT)/dashboard-chart/dashboards/helm-check-sample.json
	$(HELM_RUN) template $(HELM_RELEASE) $(HELM_OUT)/dashboard-chart > $(HELM_OUT)/dashboards.tmp
	mv $(HELM_OUT)/dashboards.tmp $(HELM_OUT)/rendered-dashboards.yaml
	HELM_RENDERED_DIR=$(HELM_OUT) $(GO) test -count=1 ./deploy/helm/...

# helm, built from source at a pinned version (go install ignores go.mod here).
$(BIN)/helm:
	GOBIN=$(BIN) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
