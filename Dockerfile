# syntax=docker/dockerfile:1
#
# One image with every Sextant binary in /usr/local/bin: telemetry-mixer,
# weight-calculator, mesh-core, config-center and sextant. A container picks
# its binary by command (the Helm chart in deploy/helm does):
#
#   docker build -t ghcr.io/sextant-mesh/sextant:0.1.0 .
#   docker run --rm ghcr.io/sextant-mesh/sextant:0.1.0 mesh-core -h
#
# Multi-platform: docker buildx build --platform linux/amd64,linux/arm64 ...
# (the Go compiler cross-compiles; nothing needs cgo).

ARG GO_IMAGE=golang:1.26
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
ARG TARGETOS
ARG TARGETARCH
# go.mod asks for go 1.26.0: build with the image's Go, never download another.
ENV GOTOOLCHAIN=local \
    CGO_ENABLED=0
WORKDIR /src
# Modules first, so that a source change does not download them again. The
# contract (api/) and the SDK (sdk/...) are modules of their own in this
# repository, which go.mod replaces with their directories.
COPY go.mod go.sum go.work go.work.sum ./
COPY api/go.mod api/
COPY sdk/go.mod sdk/
COPY sdk/kitexsdk/go.mod sdk/kitexsdk/go.sum sdk/kitexsdk/
COPY sdk/hertzsdk/go.mod sdk/hertzsdk/go.sum sdk/hertzsdk/
COPY sdk/natssdk/go.mod sdk/natssdk/go.sum sdk/natssdk/
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/ \
        ./services/telemetry-mixer \
        ./services/weight-calculator \
        ./services/mesh-core \
        ./services/config-center \
        ./cmd/sextant

# Static binaries on distroless: CA certificates and time zones, no shell, and
# the user nonroot (65532), which the chart also names in its securityContext.
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="sextant" \
      org.opencontainers.image.description="Sextant service-mesh control plane: telemetry-mixer, weight-calculator, mesh-core, config-center" \
      org.opencontainers.image.source="https://github.com/sextant-mesh/sextant"
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
# mixer 7701; calculator Kitex 7702, admin 7712; mesh-core 7703, Kitex 7713; config-center 7704.
EXPOSE 7701 7702 7703 7704 7712 7713
CMD ["/usr/local/bin/sextant", "help"]
