# The targets CI and people run. `make test` is what .ci/run calls.
CARGO ?= cargo

.PHONY: all build run test lint fmt unit integration bench fuzz clean docs deb rpm

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
	python3 fuzz/seed.py
	cd fuzz && for t in request_head chunked control proxy response_head forwarded; do \
		$(CARGO) +nightly fuzz run $$t -- -max_total_time=60 || exit 1; done

# The man page and shell completions, from the clap definition.
docs:
	$(CARGO) run --release --example gen-docs -- target/docs

# Packages (see packaging/README.md: build against the distribution's Python).
deb: build docs
	command -v cargo-deb >/dev/null || $(CARGO) install cargo-deb
	$(CARGO) deb --no-build

rpm: build docs
	command -v cargo-generate-rpm >/dev/null || $(CARGO) install cargo-generate-rpm
	$(CARGO) generate-rpm

clean:
	$(CARGO) clean
