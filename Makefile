# The targets CI and people run. `make test` is what .ci/run calls.
CARGO ?= cargo

.PHONY: all build run test lint fmt unit integration bench fuzz clean

all: build

build:
	$(CARGO) build --release

# Serves the bundled example app on http://127.0.0.1:8000
# (built first: zibai needs zibai-worker next to it, which `cargo run` skips)
run: build
	./target/release/zibai examples.hello:app

# Everything CI checks: formatting, lints, unit and integration tests.
test: lint
	$(CARGO) test --all-targets

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

unit:
	$(CARGO) test --lib

integration:
	$(CARGO) test --test integration

bench:
	bench/run

# Needs nightly and cargo-fuzz; run by hand, not in CI.
fuzz:
	cd fuzz && $(CARGO) +nightly fuzz run request_head -- -max_total_time=60
	cd fuzz && $(CARGO) +nightly fuzz run chunked -- -max_total_time=60

clean:
	$(CARGO) clean
