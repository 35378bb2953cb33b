#!/usr/bin/env sh
# Builds libprovd in release mode and installs it with its header and pkg-config file:
#   ffi/install.sh [PREFIX]        (default /usr/local)
# gives PREFIX/lib/libprovd.{so,a}, PREFIX/include/provd.h, PREFIX/lib/pkgconfig/provd.pc.
#
# A program linked with `pkg-config --libs provd` runs without LD_LIBRARY_PATH: provd.pc's
# Libs carries an rpath to PREFIX/lib. For programs linked by hand (`-lprovd`), the
# dynamic linker's cache is refreshed (`ldconfig`) when PREFIX/lib is one of its
# directories (/usr/local/lib, /usr/lib) and this runs as root.
# PROVD_LIB_DIR=DIR installs the libraries already built in DIR instead of building.
set -eu
prefix=${1:-/usr/local}
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${PROVD_LIB_DIR:-}" ]; then
  built=$PROVD_LIB_DIR
else
  cargo build --release -p provd-ffi --manifest-path "$root/Cargo.toml"
  built=${CARGO_TARGET_DIR:-$root/target}/release
fi
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
install -d "$prefix/lib/pkgconfig" "$prefix/include"
install -m 0644 "$root/include/provd.h" "$prefix/include/provd.h"
install -m 0755 "$built/libprovd.so" "$prefix/lib/libprovd.so"
install -m 0644 "$built/libprovd.a" "$prefix/lib/libprovd.a"
# The template's comments are for this repository, not for the installed file.
sed -e '/^#/d' -e "s|@PREFIX@|$prefix|" -e "s|@LIBDIR@|$prefix/lib|" \
    -e "s|@INCLUDEDIR@|$prefix/include|" -e "s|@VERSION@|$version|" \
    "$root/ffi/provd.pc.in" > "$prefix/lib/pkgconfig/provd.pc"
case $prefix in
  /usr/local | /usr/local/ | /usr | /usr/)
    if [ "$(id -u)" = 0 ] && command -v ldconfig >/dev/null 2>&1; then
      ldconfig
    fi
    ;;
esac
echo "installed libprovd $version under $prefix"
