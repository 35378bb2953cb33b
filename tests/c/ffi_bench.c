/*
 * The C side of `provd-ffi-bench` (tests/src/bin/ffi_bench.rs), which compiles this file with
 * -O2 against libprovd.so, runs it against the same daemon as its Rust measurements, and
 * prints the comparison. Not a test.
 *
 * Usage: ffi_bench SOCKET_PATH SHORT_ITERATIONS LONG_ITERATIONS LONG_CHUNKS
 *
 * Times, with CLOCK_MONOTONIC, whole mock generations through the C ABI: SHORT_ITERATIONS
 * generations of one chunk (the per-request cost) and LONG_ITERATIONS generations of
 * LONG_CHUNKS chunks (the per-chunk cost), each through the callback API and the pull
 * API, on one connection, after a warm-up. Prints one line per series: its name, then the
 * duration of every generation in nanoseconds.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "provd.h"

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, provd_status st, provd_error *err) {
  provd_str msg = {0};
  provd_error_message(err, &msg);
  fprintf(stderr, "%s: %s: %s\n", what, provd_status_name(st), msg.data ? msg.data : "");
  exit(1);
}

static provd_request *numbered(uint32_t chunks) {
  provd_request *req = NULL;
  provd_error *err = NULL;
  char json[128];
  int n = snprintf(json, sizeof json, "{\"mock\": {\"numbered\": true, \"chunks\": %u}}", chunks);
  provd_status st = provd_request_new(&req, &err);
  if (st == PROVD_OK) st = provd_request_set_prompt(req, "count for me", 12, &err);
  if (st == PROVD_OK) st = provd_request_set_additional_params_json(req, json, (size_t)n, &err);
  if (st != PROVD_OK) die("request", st, err);
  return req;
}

/* What a caller does with a chunk at the least: look at its bytes. */
static int on_chunk(void *userdata, const char *text, size_t len, uint32_t index) {
  (void)index;
  size_t *bytes = userdata;
  *bytes += len + (size_t)(len > 0 ? (unsigned char)text[0] & 1u : 0u);
  return PROVD_CONTINUE;
}

static uint64_t by_callback(provd_client *client, const provd_request *req) {
  size_t bytes = 0;
  provd_error *err = NULL;
  uint64_t start = now_ns();
  provd_status st = provd_client_generate(client, req, on_chunk, &bytes, NULL, NULL, &err);
  uint64_t took = now_ns() - start;
  if (st != PROVD_OK) die("generate", st, err);
  return took;
}

static uint64_t by_stream(provd_client *client, const provd_request *req) {
  size_t bytes = 0;
  provd_error *err = NULL;
  provd_stream *stream = NULL;
  provd_str text;
  uint64_t start = now_ns();
  provd_status st = provd_stream_start(client, req, &stream, &err);
  if (st != PROVD_OK) die("stream_start", st, err);
  while ((st = provd_stream_next(stream, &text, &err)) == PROVD_OK && text.data != NULL) {
    on_chunk(&bytes, text.data, text.len, 0);
  }
  if (st != PROVD_OK) die("stream_next", st, err);
  st = provd_stream_finish(stream, NULL, &err);
  provd_stream_free(stream);
  uint64_t took = now_ns() - start;
  if (st != PROVD_OK) die("stream_finish", st, err);
  return took;
}

typedef uint64_t (*method)(provd_client *, const provd_request *);

static void series(const char *name, provd_client *client, const provd_request *req, method m,
                   int iterations) {
  for (int i = 0; i < iterations / 10 + 1; i++) {
    m(client, req); /* warm-up */
  }
  printf("%s", name);
  for (int i = 0; i < iterations; i++) {
    printf(" %llu", (unsigned long long)m(client, req));
  }
  printf("\n");
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s SOCKET_PATH SHORT_ITERATIONS LONG_ITERATIONS LONG_CHUNKS\n", argv[0]);
    return 2;
  }
  int short_iterations = atoi(argv[2]);
  int long_iterations = atoi(argv[3]);
  uint32_t long_chunks = (uint32_t)strtoul(argv[4], NULL, 10);
  provd_client *client = NULL;
  provd_error *err = NULL;
  provd_status st = provd_client_connect(argv[1], strlen(argv[1]), &client, &err);
  if (st != PROVD_OK) die("connect", st, err);
  provd_request *one = numbered(1);
  provd_request *many = numbered(long_chunks);
  series("c_callback_short", client, one, by_callback, short_iterations);
  series("c_stream_short", client, one, by_stream, short_iterations);
  series("c_callback_long", client, many, by_callback, long_iterations);
  series("c_stream_long", client, many, by_stream, long_iterations);
  provd_request_free(one);
  provd_request_free(many);
  provd_client_free(client);
  return 0;
}
