# GOEXPERIMENT=jsonv2 is needed by mautrix's federation packages on Go 1.26.
export GOEXPERIMENT := jsonv2
GO ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X hearth/internal/version.Version=$(VERSION)

.PHONY: build run test bench lint

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/hearth ./cmd/hearth

run: build
	./bin/hearth

# Tests are built with the goolm tag: the end-to-end encryption test runs two
# real mautrix-go OlmMachine clients, and mautrix picks its pure-Go Olm (goolm)
# only with that tag; without it, it links the C libolm.
TEST_TAGS := goolm

# Runs every test with the race detector on SQLite, and on Postgres too when
# HEARTH_TEST_POSTGRES holds a DSN (.ci/run starts a throwaway server and sets it).
test:
	$(GO) vet -tags $(TEST_TAGS) ./...
	$(GO) test -tags $(TEST_TAGS) -race -count=1 -timeout 45m ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt'd:"; echo "$$out"; exit 1; fi
