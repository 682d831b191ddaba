# queuewatch — everything here needs only Go; the tests start their own
# NATS servers and fake Periskope API.

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 30s

.PHONY: test test-short build run demo fuzz fuzz-smoke vet fmt lint

## test: the whole suite under the race detector (what CI runs)
test:
	$(GO) test -race -count=1 ./...

## build: a static binary in bin/ with the version stamped
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/queuewatch ./cmd/queuewatch

## demo: embedded NATS + simulated Periskope API + live events
demo:
	$(GO) run ./cmd/queuewatch demo

## fuzz: run each fuzz target (diff, API decoder, event decoder) for FUZZTIME
fuzz:
	$(GO) test ./diff -run '^$$' -fuzz '^FuzzCompare$$' -fuzztime $(FUZZTIME)
	$(GO) test ./periskope -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME)
	$(GO) test ./events -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME)

## fuzz-smoke: each fuzz target for a few seconds (CI): they keep compiling and their seed corpus keeps passing
fuzz-smoke:
	$(MAKE) --no-print-directory fuzz FUZZTIME=3s

vet:
	$(GO) vet ./...

fmt:
	gofmt -l -w .

## lint: formatting and vet, failing on any finding
lint:
	@test -z "$$(gofmt -l .)" || (gofmt -l . && exit 1)
	$(GO) vet ./...

# --- container image and Kubernetes manifests (deploy/) ---

IMAGE ?= ghcr.io/queuewatch/queuewatch:$(VERSION)

.PHONY: image manifests

## image: the container image (needs Docker with BuildKit); same go build line as `build`
image:
	docker build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE) .

## manifests: each overlay rendered with the kustomize API into bin/manifests/<overlay>.yaml (no kubectl needed)
manifests:
	$(GO) run ./deploy/render -out bin/manifests $(wildcard deploy/overlays/*)
