#!/usr/bin/env sh
# Builds libprovd in release mode and installs it with its header and pkg-config file:
#   ffi/install.sh [PREFIX]        (default /usr/local)
# gives PREFIX/lib/libprovd.{so,a}, PREFIX/include/provd.h, PREFIX/lib/pkgconfig/provd.pc.
set -eu
prefix=${1:-/usr/local}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -p provd-ffi --manifest-path "$root/Cargo.toml"
target=${CARGO_TARGET_DIR:-$root/target}/release
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
install -d "$prefix/lib/pkgconfig" "$prefix/include"
install -m 0644 "$root/include/provd.h" "$prefix/include/provd.h"
install -m 0755 "$target/libprovd.so" "$prefix/lib/libprovd.so"
install -m 0644 "$target/libprovd.a" "$prefix/lib/libprovd.a"
sed -e "s|@PREFIX@|$prefix|" -e "s|@LIBDIR@|$prefix/lib|" \
    -e "s|@INCLUDEDIR@|$prefix/include|" -e "s|@VERSION@|$version|" \
    "$root/ffi/provd.pc.in" > "$prefix/lib/pkgconfig/provd.pc"
echo "installed libprovd $version under $prefix"
