//! libprovd: the C ABI over `provd-client` (in progress).
