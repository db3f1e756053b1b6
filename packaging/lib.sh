# shellcheck shell=bash
# Shared by the packaging scripts (sourced, not run).

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Both package formats carry a packaging revision after the upstream version.
# shellcheck disable=SC2034 # used by the scripts that source this
package_release=1

die() {
    echo "error: $*" >&2
    exit 1
}

# The version in Cargo.toml's [package] table: the one source of the version.
cargo_version() {
    sed -n '/^\[package\]/,/^\[/ s/^version *= *"\([^"]*\)".*/\1/p' "$repo/Cargo.toml" | head -n 1
}

# Debian and RPM versions: neither allows the `-` of a semver pre-release in the upstream part,
# and both sort `~` before the release (0.2.0~rc.1 < 0.2.0), which is what semver means.
package_version() {
    cargo_version | tr '-' '~'
}

# A package must never ship a stale binary: its --version has to name Cargo.toml's version.
require_binary_version() {
    local bin="$1" version
    version="$(cargo_version)"
    [ -n "$version" ] || die "no version found in $repo/Cargo.toml"
    "$bin" --version | grep -qF " $version" ||
        die "$bin --version says '$("$bin" --version | head -n 1)', Cargo.toml says $version; rebuild it (make static)"
}
