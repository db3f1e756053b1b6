# The two commands a fresh machine needs (see README.md):
#   make demo   build, start the bundled PIN service and run a master and two workers
#   make test   every check CI runs: format, lints, unit and integration tests, boot simulation
.PHONY: demo test check deps static deb rpm install package-check openapi fuzz-api deploy-check

demo:
	contrib/demo/run

# The boot simulation: every scenario on Debian bookworm, then the trixie subset that keeps CI
# well inside its time limit (the whole trixie set: `contrib/bootsim/run --distro trixie`).
TRIXIE_SCENARIOS := cloud-init happy shotgun reboot legacy-agent membership

# Both runs boot the binary `make static` built (and package-check checked), instead of
# each building its own.
test: deps check fuzz-api static package-check deploy-check
	BOOTSIM_CLUSTERCTX=$(STATIC_BIN) contrib/bootsim/run
	BOOTSIM_CLUSTERCTX=$(STATIC_BIN) contrib/bootsim/run --distro trixie --out target/bootsim-trixie $(TRIXIE_SCENARIOS)

# Everything but the boot simulation: quick enough to run before every commit.
check:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --no-default-features -- -D warnings
	cargo test --all-targets
	cargo test --doc

deps:
	contrib/ci/install-deps

# The service's OpenAPI description, committed (a test fails when it differs from the served one).
openapi:
	cargo run --quiet -- generate openapi --out-dir docs

# The deployment example run for real: three replicas on a throw-away PostgreSQL behind HAProxy,
# one killed under a waiting worker (contrib/deploy/try).
deploy-check:
	cargo build --quiet
	contrib/deploy/try

# Schemathesis against the live service, from the description (contrib/ci/fuzz-api).
fuzz-api:
	contrib/ci/fuzz-api

# Release artifacts (README.md, "Install"). The fully static binary: glibc's crt-static on the
# gnu target (the musl target is not installable here; reqwest uses rustls, so no OpenSSL).
# Same flags as contrib/bootsim/run, so both share one build.
STATIC_TARGET := x86_64-unknown-linux-gnu
STATIC_BIN := target/$(STATIC_TARGET)/release/clusterctx
PACKAGE_DIR := target/packages
PREFIX ?= /usr/local
DESTDIR ?=

# Built, then proven static, stripped, and working in an empty root (packaging/verify-static).
static:
	RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target $(STATIC_TARGET)
	packaging/verify-static $(STATIC_BIN)

deb: static
	packaging/build-deb $(STATIC_BIN) $(PACKAGE_DIR)

rpm: static
	packaging/build-rpm $(STATIC_BIN) $(PACKAGE_DIR)

# Installs the binary built by `make static` (it does not build: `sudo make install` often
# has no cargo). Enables nothing: see README.md, "Install".
install:
	packaging/install-tree --bin $(STATIC_BIN) --destdir "$(DESTDIR)" --prefix "$(PREFIX)"

# Both packages built, inspected and installed into a Debian root (packaging/check).
package-check: static
	packaging/check $(STATIC_BIN)
