/*
 * A C caller of libprovd, built and run by tests/tests/ffi.rs: once linked against
 * libprovd.so (and run under valgrind memcheck when it is installed), once against
 * libprovd.a.
 *
 * Usage: provd_test SOCKET_PATH MISSING_SOCKET_PATH
 *
 * SOCKET_PATH is a running daemon with the built-in mock provider; MISSING_SOCKET_PATH is
 * a path where no daemon listens. It streams generations with the callback and the pull
 * API, runs a tool round trip and asks for JSON, reasoning and images, cancels from a second thread, runs generations on one client from several threads,
 * and walks every error path it can reach: bad path, daemon down, NULL arguments, bad
 * UTF-8, unknown provider, daemon errors with retry hints. Every object it receives is
 * freed, so memcheck can hold the library to "no leaks".
 *
 * Prints one line per failed check and ends with "N passed, M failed"; exits 0 only when
 * nothing failed.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "provd.h"

/* The wire codes keep their numbers in C (PROTOCOL.md section 11.2). */
_Static_assert(PROVD_OK == 0, "ok is 0");
_Static_assert(PROVD_INVALID_REQUEST == 1, "wire code 1");
_Static_assert(PROVD_RATE_LIMITED == 5, "wire code 5");
_Static_assert(PROVD_CANCELLED == 10, "wire code 10");
_Static_assert(PROVD_INTERNAL == 12, "wire code 12");
_Static_assert(sizeof(provd_status) == 4, "a status is 32 bits");

static int passed;
static int failed;

#define CHECK(cond, ...)                                                         \
  do {                                                                           \
    if (cond) {                                                                  \
      passed++;                                                                  \
    } else {                                                                     \
      failed++;                                                                  \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);            \
      fprintf(stderr, __VA_ARGS__);                                              \
      fputc('\n', stderr);                                                       \
    }                                                                            \
  } while (0)

/* A string literal as the pointer + length pair the API takes. */
#define LIT(s) (s), (sizeof(s) - 1)

static const char *socket_path;
static const char *missing_path;

/* The message of an error object, or "(no error object)". */
static const char *message(const provd_error *err) {
  provd_str s;
  if (provd_error_message(err, &s) != PROVD_OK) {
    return "(no error object)";
  }
  return s.data; /* NUL-terminated; the error owns it. */
}

static bool str_eq(provd_str s, const char *expected) {
  return s.data != NULL && s.len == strlen(expected) && memcmp(s.data, expected, s.len) == 0;
}

static provd_client *connect_or_die(void) {
  provd_client *client = NULL;
  provd_error *err = NULL;
  provd_status st = provd_client_connect(socket_path, strlen(socket_path), &client, &err);
  if (st != PROVD_OK) {
    fprintf(stderr, "cannot connect to %s: %s (%s)\n", socket_path, provd_status_name(st),
            message(err));
    provd_error_free(err);
    exit(2);
  }
  return client;
}

/* A request to the mock provider with these mock options (a JSON object). */
static provd_request *mock_request(const char *prompt, const char *mock_json) {
  provd_request *req = NULL;
  char json[512];
  int n = snprintf(json, sizeof json, "{\"mock\": %s}", mock_json);
  CHECK(provd_request_new(&req, NULL) == PROVD_OK, "request_new");
  CHECK(provd_request_set_prompt(req, prompt, strlen(prompt), NULL) == PROVD_OK, "prompt");
  CHECK(provd_request_set_additional_params_json(req, json, (size_t)n, NULL) == PROVD_OK,
        "params %s", json);
  return req;
}

/* What a chunk callback collects. */
struct collected {
  char text[1 << 16];
  size_t len;
  uint32_t calls;
  bool indexes_in_order;
  bool nul_terminated;
  uint32_t stop_after; /* return PROVD_STOP after this many chunks; 0 = never */
  sem_t *first_chunk;  /* posted once at the first chunk, if set */
};

static void collected_init(struct collected *c) {
  memset(c, 0, sizeof *c);
  c->indexes_in_order = true;
  c->nul_terminated = true;
}

static int on_chunk(void *userdata, const char *text, size_t len, uint32_t index) {
  struct collected *c = userdata;
  if (index != c->calls) {
    c->indexes_in_order = false;
  }
  if (text[len] != '\0') {
    c->nul_terminated = false;
  }
  if (c->len + len < sizeof c->text) {
    memcpy(c->text + c->len, text, len);
    c->len += len;
    c->text[c->len] = '\0';
  }
  c->calls++;
  if (c->calls == 1 && c->first_chunk != NULL) {
    sem_post(c->first_chunk);
  }
  if (c->stop_after != 0 && c->calls >= c->stop_after) {
    return PROVD_STOP;
  }
  return PROVD_CONTINUE;
}

/* "0 1 2 ... (n-1) ", the mock's numbered answer. */
static void numbered_text(char *buf, size_t size, uint32_t n) {
  size_t at = 0;
  buf[0] = '\0';
  for (uint32_t i = 0; i < n && at < size; i++) {
    at += (size_t)snprintf(buf + at, size - at, "%u ", i);
  }
}

static void test_versions(void) {
  CHECK(strcmp(provd_version(), "") != 0, "version is empty");
  CHECK(provd_protocol_version() == PROVD_PROTOCOL_VERSION, "protocol %u",
        provd_protocol_version());
  CHECK(strcmp(provd_status_name(PROVD_RATE_LIMITED), "rate_limited") == 0, "%s",
        provd_status_name(PROVD_RATE_LIMITED));
  CHECK(strcmp(provd_status_name(PROVD_INVALID_UTF8), "invalid_utf8") == 0, "name");
  CHECK(strcmp(provd_status_name(4242), "unknown") == 0, "unknown status name");
  CHECK(strcmp(provd_finish_reason_name(PROVD_FINISH_LENGTH), "length") == 0, "reason");
}

static void test_callback_stream(provd_client *client) {
  provd_request *req = mock_request("count for me", "{\"numbered\": true, \"chunks\": 20}");
  struct collected c;
  collected_init(&c);
  provd_done *done = NULL;
  provd_error *err = NULL;
  provd_status st = provd_client_generate(client, req, on_chunk, &c, NULL, &done, &err);
  CHECK(st == PROVD_OK, "generate: %s (%s)", provd_status_name(st), message(err));
  CHECK(err == NULL, "no error object on success");
  char expected[256];
  numbered_text(expected, sizeof expected, 20);
  CHECK(strcmp(c.text, expected) == 0, "text %s", c.text);
  CHECK(c.calls == 20 && c.indexes_in_order && c.nul_terminated, "calls %u", c.calls);

  provd_usage usage;
  provd_finish_reason reason = PROVD_FINISH_OTHER;
  uint32_t chunks = 0;
  provd_str model, provider;
  CHECK(provd_done_usage(done, &usage) == PROVD_OK, "usage");
  CHECK(usage.prompt_tokens == 3 && usage.completion_tokens == 20 && usage.total_tokens == 23,
        "usage %u %u %u", usage.prompt_tokens, usage.completion_tokens, usage.total_tokens);
  CHECK(provd_done_finish_reason(done, &reason) == PROVD_OK && reason == PROVD_FINISH_STOP,
        "reason %u", reason);
  CHECK(provd_done_chunks(done, &chunks) == PROVD_OK && chunks == 20, "chunks %u", chunks);
  CHECK(provd_done_model(done, &model) == PROVD_OK && str_eq(model, "mock-1"), "model");
  CHECK(provd_done_provider(done, &provider) == PROVD_OK && str_eq(provider, "mock"), "prov");
  provd_done_free(done);

  /* max_tokens cuts the answer short with finish reason "length". */
  CHECK(provd_request_set_max_tokens(req, 5, NULL) == PROVD_OK, "max_tokens");
  collected_init(&c);
  st = provd_client_generate(client, req, on_chunk, &c, NULL, &done, NULL);
  CHECK(st == PROVD_OK && c.calls == 5, "%s, %u calls", provd_status_name(st), c.calls);
  CHECK(provd_done_finish_reason(done, &reason) == PROVD_OK && reason == PROVD_FINISH_LENGTH,
        "reason %u", reason);
  provd_done_free(done);
  provd_request_free(req);
}

static void test_messages_and_sampling(provd_client *client) {
  provd_request *req = NULL;
  provd_done *done = NULL;
  provd_error *err = NULL;
  CHECK(provd_request_new(&req, NULL) == PROVD_OK, "new");
  CHECK(provd_request_set_provider(req, LIT("mock"), NULL) == PROVD_OK, "provider");
  CHECK(provd_request_set_model(req, LIT("mock-1"), NULL) == PROVD_OK, "model");
  CHECK(provd_request_set_system(req, LIT("be very brief"), NULL) == PROVD_OK, "system");
  CHECK(provd_request_add_message(req, PROVD_ROLE_USER, LIT("hello there"), NULL) == PROVD_OK,
        "user turn");
  CHECK(provd_request_add_message(req, PROVD_ROLE_ASSISTANT, LIT("hi"), NULL) == PROVD_OK,
        "assistant turn");
  CHECK(provd_request_set_temperature(req, 0.2, NULL) == PROVD_OK, "temperature");
  CHECK(provd_request_set_top_p(req, 0.9, NULL) == PROVD_OK, "top_p");
  CHECK(provd_request_add_stop(req, LIT("STOP"), NULL) == PROVD_OK, "stop");
  CHECK(provd_request_set_additional_params_json(req, LIT("{\"mock\": {\"chunks\": 2}}"), NULL) ==
            PROVD_OK,
        "params");
  struct collected c;
  collected_init(&c);
  provd_status st = provd_client_generate(client, req, on_chunk, &c, NULL, &done, &err);
  CHECK(st == PROVD_OK, "%s (%s)", provd_status_name(st), message(err));
  provd_usage usage = {0};
  provd_done_usage(done, &usage);
  /* 3 words of system prompt + 2 + 1 words of turns, no prompt. */
  CHECK(usage.prompt_tokens == 6, "prompt tokens %u", usage.prompt_tokens);
  CHECK(c.calls == 2, "calls %u", c.calls);
  provd_done_free(done);
  provd_error_free(err);
  provd_request_free(req);
}

static void test_callback_stop(provd_client *client) {
  provd_request *req = mock_request("count for me", "{\"numbered\": true, \"chunks\": 50}");
  struct collected c;
  collected_init(&c);
  c.stop_after = 3;
  provd_done *done = NULL;
  provd_error *err = NULL;
  provd_status st = provd_client_generate(client, req, on_chunk, &c, NULL, &done, &err);
  CHECK(st == PROVD_CANCELLED, "%s", provd_status_name(st));
  CHECK(done == NULL, "no done after a stop");
  CHECK(c.calls == 3, "no chunk after PROVD_STOP, got %u calls", c.calls);
  CHECK(provd_error_code(err) == PROVD_CANCELLED, "code");
  uint32_t chunks = 0;
  bool known = false;
  CHECK(provd_error_chunks(err, &chunks, &known) == PROVD_OK && known && chunks == 3,
        "chunks %u", chunks);
  CHECK(strstr(message(err), "PROVD_STOP") != NULL, "%s", message(err));
  provd_error_free(err);
  provd_request_free(req);
}

struct nested {
  provd_client *client;
  provd_status ping;
  provd_status inner_generate;
  uint32_t calls;
};

/* A callback that calls back into the library: a ping and a whole nested generation. */
static int on_chunk_nested(void *userdata, const char *text, size_t len, uint32_t index) {
  (void)text;
  (void)len;
  struct nested *n = userdata;
  n->calls++;
  if (index == 1) {
    n->ping = provd_client_ping(n->client, NULL);
    provd_request *inner = mock_request("count for me", "{\"numbered\": true, \"chunks\": 3}");
    struct collected c;
    collected_init(&c);
    n->inner_generate = provd_client_generate(n->client, inner, on_chunk, &c, NULL, NULL, NULL);
    provd_request_free(inner);
  }
  return PROVD_CONTINUE;
}

static void test_callback_may_call_the_library(provd_client *client) {
  provd_request *req = mock_request("count for me", "{\"numbered\": true, \"chunks\": 4}");
  struct nested n = {client, PROVD_INTERNAL, PROVD_INTERNAL, 0};
  provd_status st = provd_client_generate(client, req, on_chunk_nested, &n, NULL, NULL, NULL);
  CHECK(st == PROVD_OK && n.calls == 4, "%s, %u calls", provd_status_name(st), n.calls);
  CHECK(n.ping == PROVD_OK, "ping from a callback: %s", provd_status_name(n.ping));
  CHECK(n.inner_generate == PROVD_OK, "generation from a callback: %s",
        provd_status_name(n.inner_generate));
  provd_request_free(req);
}

static void test_pull_stream(provd_client *client) {
  provd_request *req = mock_request("count for me", "{\"numbered\": true, \"chunks\": 10}");
  provd_stream *stream = NULL;
  provd_error *err = NULL;
  CHECK(provd_stream_start(client, req, &stream, &err) == PROVD_OK, "%s", message(err));
  provd_request_free(req); /* the stream copied it */
  char text[256] = "";
  size_t at = 0;
  provd_str chunk;
  provd_status st;
  int chunks = 0;
  while ((st = provd_stream_next(stream, &chunk, &err)) == PROVD_OK && chunk.data != NULL) {
    memcpy(text + at, chunk.data, chunk.len);
    at += chunk.len;
    text[at] = '\0';
    chunks++;
  }
  CHECK(st == PROVD_OK && err == NULL, "%s (%s)", provd_status_name(st), message(err));
  char expected[256];
  numbered_text(expected, sizeof expected, 10);
  CHECK(chunks == 10 && strcmp(text, expected) == 0, "%d chunks: %s", chunks, text);
  /* After the end, next keeps saying "end". */
  CHECK(provd_stream_next(stream, &chunk, NULL) == PROVD_OK && chunk.data == NULL, "end");
  provd_done *done = NULL;
  CHECK(provd_stream_finish(stream, &done, &err) == PROVD_OK, "%s", message(err));
  uint32_t n = 0;
  CHECK(provd_done_chunks(done, &n) == PROVD_OK && n == 10, "done chunks %u", n);
  provd_done_free(done);
  provd_stream_free(stream);

  /* finish without reading: discards the chunks and reports the end. */
  req = mock_request("count for me", "{\"numbered\": true, \"chunks\": 7}");
  CHECK(provd_stream_start(client, req, &stream, NULL) == PROVD_OK, "start");
  CHECK(provd_stream_finish(stream, &done, NULL) == PROVD_OK, "finish");
  CHECK(provd_done_chunks(done, &n) == PROVD_OK && n == 7, "done chunks %u", n);
  provd_done_free(done);
  provd_stream_free(stream);

  /* Freeing a stream in the middle cancels it in the daemon; nothing leaks. */
  CHECK(provd_stream_start(client, req, &stream, NULL) == PROVD_OK, "start");
  CHECK(provd_stream_next(stream, &chunk, NULL) == PROVD_OK && chunk.data != NULL, "chunk");
  provd_stream_free(stream);
  provd_request_free(req);
}

/* What provd_client_generate_events collects: text, tool-call pieces and reasoning. */
struct events {
  char text[4096];
  char reasoning[1024];
  char arguments[1024]; /* the fragments of call 0, joined */
  char first_name[64];
  char first_id[64];
  uint32_t chunks;
  uint32_t pieces;
  bool indexes_in_order;
  bool tool_pieces_have_no_text;
};

static void events_init(struct events *e) {
  memset(e, 0, sizeof *e);
  e->indexes_in_order = true;
  e->tool_pieces_have_no_text = true;
}

/* Appends a lent string to a fixed buffer, NUL-terminated. */
static void append(char *buf, size_t size, provd_str s) {
  size_t at = strlen(buf);
  if (s.data != NULL && at + s.len < size) {
    memcpy(buf + at, s.data, s.len);
    buf[at + s.len] = '\0';
  }
}

/* Records one chunk of any kind (shared by the callback and the pull loop). */
static void record_chunk(struct events *e, const provd_chunk *chunk) {
  if (chunk->index != e->chunks) {
    e->indexes_in_order = false;
  }
  e->chunks++;
  switch (chunk->kind) {
  case PROVD_CHUNK_TEXT:
    append(e->text, sizeof e->text, chunk->text);
    break;
  case PROVD_CHUNK_REASONING:
    append(e->reasoning, sizeof e->reasoning, chunk->reasoning);
    break;
  case PROVD_CHUNK_TOOL_CALL:
    e->pieces++;
    if (chunk->text.len != 0 || chunk->reasoning.data != NULL) {
      e->tool_pieces_have_no_text = false;
    }
    if (e->pieces == 1) {
      append(e->first_name, sizeof e->first_name, chunk->tool_call_name);
      append(e->first_id, sizeof e->first_id, chunk->tool_call_id);
    }
    if (chunk->tool_call_index == 0) {
      append(e->arguments, sizeof e->arguments, chunk->tool_call_arguments);
    }
    break;
  }
}

static int on_event(void *userdata, const provd_chunk *chunk) {
  record_chunk(userdata, chunk);
  return PROVD_CONTINUE;
}

static const char WEATHER_TOOLS[] =
    "[{\"name\": \"get_weather\", \"description\": \"The weather in a city\", \"parameters\": "
    "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, "
    "\"required\": [\"city\"]}}]";

/* A request with one user turn for the default (mock) provider. */
static provd_request *turn_request(const char *user_text) {
  provd_request *req = NULL;
  CHECK(provd_request_new(&req, NULL) == PROVD_OK, "request_new");
  CHECK(provd_request_add_message(req, PROVD_ROLE_USER, user_text, strlen(user_text), NULL) ==
            PROVD_OK,
        "user turn");
  return req;
}

/*
 * A two-turn tool conversation: the call streamed in pieces (pull API and
 * provd_stream_chunk), assembled in the done result, sent back with its result (once
 * from the done result, once built by hand), then the answer made from the result.
 */
static void test_tool_round_trip(provd_client *client) {
  provd_error *err = NULL;
  provd_request *req = turn_request("What is the weather in Paris?");
  CHECK(provd_request_set_tools_json(req, LIT(WEATHER_TOOLS), &err) == PROVD_OK, "%s",
        message(err));
  CHECK(provd_request_set_tool_choice(req, LIT("auto"), NULL) == PROVD_OK, "tool_choice");

  provd_stream *stream = NULL;
  CHECK(provd_stream_start(client, req, &stream, &err) == PROVD_OK, "%s", message(err));
  struct events seen;
  events_init(&seen);
  provd_str text;
  provd_chunk chunk;
  while (provd_stream_next(stream, &text, &err) == PROVD_OK && text.data != NULL) {
    CHECK(provd_stream_chunk(stream, &chunk) == PROVD_OK, "stream_chunk");
    record_chunk(&seen, &chunk);
  }
  CHECK(err == NULL, "%s", message(err));
  CHECK(provd_stream_chunk(stream, &chunk) == PROVD_INVALID_ARGUMENT, "no chunk after the end");
  CHECK(seen.pieces >= 2 && seen.pieces == seen.chunks, "%u pieces of %u chunks", seen.pieces,
        seen.chunks);
  CHECK(seen.indexes_in_order && seen.tool_pieces_have_no_text, "pieces in order, no text");
  CHECK(strcmp(seen.first_name, "get_weather") == 0 && strcmp(seen.first_id, "mock_call_0") == 0,
        "first piece %s %s", seen.first_name, seen.first_id);
  CHECK(seen.text[0] == '\0', "no text: %s", seen.text);

  provd_done *done = NULL;
  CHECK(provd_stream_finish(stream, &done, &err) == PROVD_OK, "%s", message(err));
  provd_stream_free(stream);
  provd_finish_reason reason = PROVD_FINISH_OTHER;
  CHECK(provd_done_finish_reason(done, &reason) == PROVD_OK && reason == PROVD_FINISH_TOOL_USE,
        "finish %s", provd_finish_reason_name(reason));
  size_t calls = 0;
  CHECK(provd_done_tool_calls_len(done, &calls) == PROVD_OK && calls == 1, "%zu calls", calls);
  provd_tool_call call;
  CHECK(provd_done_tool_calls_get(done, 0, &call) == PROVD_OK, "call 0");
  CHECK(str_eq(call.id, "mock_call_0") && str_eq(call.name, "get_weather"), "call %s %s",
        call.id.data, call.name.data);
  CHECK(str_eq(call.arguments, seen.arguments), "assembled %s, streamed %s", call.arguments.data,
        seen.arguments);
  CHECK(strstr(call.arguments.data, "\"city\"") != NULL && strstr(call.arguments.data, "\"mock\""),
        "arguments %s", call.arguments.data);
  CHECK(provd_done_tool_calls_get(done, 1, &call) == PROVD_INVALID_ARGUMENT, "call 1 is none");

  /* Turn two, from the done result: its calls and state, then the tool's result. */
  CHECK(provd_done_tool_calls_get(done, 0, &call) == PROVD_OK, "call 0");
  CHECK(provd_request_add_turn_from_done(req, done, NULL, 0, &err) == PROVD_OK, "%s",
        message(err));
  CHECK(provd_request_add_tool_result(req, call.id.data, call.id.len,
                                      LIT("18 degrees and sunny"), false, &err) == PROVD_OK,
        "%s", message(err));
  provd_done_free(done); /* the request copied what it needs */
  events_init(&seen);
  CHECK(provd_client_generate_events(client, req, on_event, &seen, NULL, &done, &err) == PROVD_OK,
        "%s", message(err));
  CHECK(strcmp(seen.text, "The tool get_weather returned: 18 degrees and sunny") == 0,
        "answer: %s", seen.text);
  CHECK(seen.pieces == 0 && seen.indexes_in_order, "%u pieces", seen.pieces);
  CHECK(provd_done_finish_reason(done, &reason) == PROVD_OK && reason == PROVD_FINISH_STOP,
        "finish %s", provd_finish_reason_name(reason));
  CHECK(provd_done_tool_calls_len(done, &calls) == PROVD_OK && calls == 0, "%zu calls", calls);
  provd_done_free(done);
  provd_request_free(req);

  /* The same turn built by hand, as a caller that stored the call would send it; the
   * old text-only callback sees the answer as text. */
  req = turn_request("What is the weather in Paris?");
  CHECK(provd_request_set_tools_json(req, LIT(WEATHER_TOOLS), NULL) == PROVD_OK, "tools");
  CHECK(provd_request_add_message(req, PROVD_ROLE_ASSISTANT, LIT(""), NULL) == PROVD_OK, "turn");
  CHECK(provd_request_add_tool_call(req, LIT("call_7"), LIT("get_weather"),
                                    LIT("{\"city\": \"Paris\"}"), &err) == PROVD_OK,
        "%s", message(err));
  CHECK(provd_request_add_tool_result(req, LIT("call_7"), LIT("rain"), true, NULL) == PROVD_OK,
        "tool result");
  struct collected *c = malloc(sizeof *c);
  collected_init(c);
  CHECK(provd_client_generate(client, req, on_chunk, c, NULL, NULL, &err) == PROVD_OK, "%s",
        message(err));
  /* is_error reached the provider: the mock says the tool failed. */
  CHECK(strcmp(c->text, "The tool get_weather failed: rain") == 0, "answer: %s", c->text);
  free(c);
  provd_request_free(req);

  /* Malformed input is refused by name, and the request keeps what it had. */
  req = turn_request("hi");
  CHECK(provd_request_set_tools_json(req, LIT("[{\"description\": \"no name\"}]"), &err) ==
            PROVD_INVALID_ARGUMENT,
        "tools without a name");
  CHECK(strncmp(message(err), "provd_request_set_tools_json: ", 30) == 0, "%s", message(err));
  provd_error_free(err);
  CHECK(provd_request_add_tool_call(req, LIT("c"), LIT("f"), LIT("{}"), &err) ==
            PROVD_INVALID_ARGUMENT,
        "a call on a user turn");
  CHECK(strstr(message(err), "`assistant` turn") != NULL, "%s", message(err));
  provd_error_free(err);
  CHECK(provd_request_add_image_url(NULL, LIT("https://example.com/a.png"), &err) ==
            PROVD_NULL_ARGUMENT,
        "NULL request");
  provd_error_free(err);
  provd_request_free(req);
}

/* JSON answers, reasoning shown and counted with its state sent back, and images. */
static void test_structured_output_reasoning_and_images(provd_client *client) {
  provd_error *err = NULL;
  struct events seen;

  provd_request *req = turn_request("Describe Paris");
  static const char schema[] =
      "{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\"}, "
      "\"population\": {\"type\": \"integer\"}}, \"required\": [\"name\", \"population\"]}";
  CHECK(provd_request_set_response_json_schema(req, LIT("city"), LIT(schema), true, &err) ==
            PROVD_OK,
        "%s", message(err));
  events_init(&seen);
  CHECK(provd_client_generate_events(client, req, on_event, &seen, NULL, NULL, &err) == PROVD_OK,
        "%s", message(err));
  CHECK(strstr(seen.text, "\"name\":\"mock\"") && strstr(seen.text, "\"population\":1"),
        "schema answer %s", seen.text);
  CHECK(provd_request_set_response_format_json(req, LIT("{\"type\": \"json_object\"}"), &err) ==
            PROVD_OK,
        "%s", message(err));
  events_init(&seen);
  CHECK(provd_client_generate_events(client, req, on_event, &seen, NULL, NULL, &err) == PROVD_OK,
        "%s", message(err));
  CHECK(strncmp(seen.text, "{\"answer\":", 10) == 0, "json_object answer %s", seen.text);
  provd_request_free(req);

  req = turn_request("why is the sky blue");
  CHECK(provd_request_set_reasoning(req, PROVD_EFFORT_DEFAULT, 1024, true, &err) == PROVD_OK, "%s",
        message(err));
  provd_done *done = NULL;
  events_init(&seen);
  CHECK(provd_client_generate_events(client, req, on_event, &seen, NULL, &done, &err) == PROVD_OK,
        "%s", message(err));
  CHECK(strcmp(seen.reasoning, "Thinking about: why is the sky blue") == 0, "reasoning %s",
        seen.reasoning);
  bool present = false;
  uint32_t reasoning_tokens = 0;
  provd_usage usage;
  CHECK(provd_done_reasoning_tokens(done, &present, &reasoning_tokens) == PROVD_OK && present &&
            reasoning_tokens == 7,
        "reasoning tokens %d %u", present, reasoning_tokens);
  CHECK(provd_done_usage(done, &usage) == PROVD_OK && usage.completion_tokens > reasoning_tokens,
        "completion %u includes reasoning", usage.completion_tokens);
  provd_str state;
  CHECK(provd_done_provider_state_json(done, &state) == PROVD_OK && state.data != NULL,
        "provider state");
  /* The reasoning turn goes back with its state. */
  provd_request *next = turn_request("why is the sky blue");
  CHECK(provd_request_add_message(next, PROVD_ROLE_ASSISTANT, seen.text, strlen(seen.text),
                                  NULL) == PROVD_OK,
        "assistant turn");
  CHECK(provd_request_set_provider_state_json(next, state.data, state.len, &err) == PROVD_OK, "%s",
        message(err));
  CHECK(provd_request_add_message(next, PROVD_ROLE_USER, LIT("and at sunset?"), NULL) == PROVD_OK,
        "user turn");
  provd_done_free(done);
  struct events answer;
  events_init(&answer);
  CHECK(provd_client_generate_events(client, next, on_event, &answer, NULL, NULL, &err) ==
            PROVD_OK,
        "%s", message(err));
  provd_request_free(next);
  /* Hidden reasoning is not sent (neither as chunks nor in the result), only counted. */
  CHECK(provd_request_set_reasoning(req, PROVD_EFFORT_LOW, 0, false, NULL) == PROVD_OK, "hide");
  events_init(&seen);
  CHECK(provd_client_generate_events(client, req, on_event, &seen, NULL, &done, &err) == PROVD_OK,
        "%s", message(err));
  CHECK(seen.reasoning[0] == '\0', "hidden reasoning was sent: %s", seen.reasoning);
  provd_str reasoning;
  CHECK(provd_done_reasoning(done, &reasoning) == PROVD_OK && reasoning.data == NULL, "absent");
  provd_done_free(done);
  CHECK(provd_request_set_reasoning(req, 9, 0, false, &err) == PROVD_INVALID_ARGUMENT,
        "effort 9");
  provd_error_free(err);
  CHECK(provd_request_clear_reasoning(req, NULL) == PROVD_OK, "clear");
  provd_request_free(req);

  req = turn_request("What is in this picture?");
  CHECK(provd_request_add_image_base64(req, LIT("image/png"), LIT("iVBORw0KGgo="), &err) ==
            PROVD_OK,
        "%s", message(err));
  events_init(&seen);
  CHECK(provd_client_generate_events(client, req, on_event, &seen, NULL, NULL, &err) == PROVD_OK,
        "%s", message(err));
  CHECK(strncmp(seen.text, "I see 1 image. ", 15) == 0, "image answer %s", seen.text);
  CHECK(provd_client_generate_events(client, req, NULL, NULL, NULL, NULL, &err) ==
            PROVD_NULL_ARGUMENT,
        "NULL on_event");
  CHECK(strstr(message(err), "`on_event`") != NULL, "%s", message(err));
  provd_error_free(err);
  provd_request_free(req);
}

static void test_stream_outlives_its_client(void) {
  provd_client *other = connect_or_die();
  provd_request *req = mock_request("count for me", "{\"numbered\": true, \"chunks\": 4}");
  provd_stream *stream = NULL;
  CHECK(provd_stream_start(other, req, &stream, NULL) == PROVD_OK, "start");
  provd_request_free(req);
  provd_client_free(other); /* the stream keeps the connection */
  provd_str chunk;
  int chunks = 0;
  provd_error *err = NULL;
  provd_status st;
  while ((st = provd_stream_next(stream, &chunk, &err)) == PROVD_OK && chunk.data != NULL) {
    chunks++;
  }
  CHECK(st == PROVD_OK && chunks == 4, "%s after %d chunks (%s)", provd_status_name(st), chunks,
        message(err));
  provd_error_free(err);
  CHECK(provd_stream_finish(stream, NULL, NULL) == PROVD_OK, "finish");
  provd_stream_free(stream); /* closes the connection */
}

static void *cancel_stream_thread(void *arg) {
  provd_error *err = NULL;
  provd_status st = provd_stream_cancel(arg, &err);
  CHECK(st == PROVD_OK, "stream_cancel: %s (%s)", provd_status_name(st), message(err));
  provd_error_free(err);
  return NULL;
}

static void test_stream_cancel_from_another_thread(provd_client *client) {
  /* Long enough that it cannot end by itself while the test runs. */
  provd_request *req =
      mock_request("count for me", "{\"numbered\": true, \"chunks\": 100000, \"chunk_delay_ms\": 5}");
  provd_stream *stream = NULL;
  CHECK(provd_stream_start(client, req, &stream, NULL) == PROVD_OK, "start");
  provd_str chunk;
  CHECK(provd_stream_next(stream, &chunk, NULL) == PROVD_OK && chunk.data != NULL, "first");
  pthread_t t;
  pthread_create(&t, NULL, cancel_stream_thread, stream);
  pthread_join(t, NULL);
  provd_error *err = NULL;
  provd_status st;
  while ((st = provd_stream_next(stream, &chunk, &err)) == PROVD_OK && chunk.data != NULL) {
  }
  CHECK(st == PROVD_CANCELLED, "%s (%s)", provd_status_name(st), message(err));
  provd_error_free(err);
  /* The same outcome again from finish; never lost. */
  provd_done *done = NULL;
  st = provd_stream_finish(stream, &done, &err);
  CHECK(st == PROVD_CANCELLED && done == NULL, "%s", provd_status_name(st));
  CHECK(provd_error_code(err) == PROVD_CANCELLED, "code %u", provd_error_code(err));
  provd_error_free(err);
  /* A cancel after the end is not an error. */
  CHECK(provd_stream_cancel(stream, NULL) == PROVD_OK, "late cancel");
  provd_stream_free(stream);
  provd_request_free(req);
}

struct token_canceller {
  provd_cancel_token *token;
  sem_t first_chunk;
};

static void *cancel_token_thread(void *arg) {
  struct token_canceller *tc = arg;
  sem_wait(&tc->first_chunk);
  provd_error *err = NULL;
  provd_status st = provd_cancel_token_cancel(tc->token, &err);
  CHECK(st == PROVD_OK, "token_cancel: %s (%s)", provd_status_name(st), message(err));
  provd_error_free(err);
  return NULL;
}

static void test_token_cancel_from_another_thread(provd_client *client) {
  provd_request *req =
      mock_request("count for me", "{\"numbered\": true, \"chunks\": 100000, \"chunk_delay_ms\": 5}");
  struct token_canceller tc;
  CHECK(provd_cancel_token_new(&tc.token, NULL) == PROVD_OK, "token");
  sem_init(&tc.first_chunk, 0, 0);
  pthread_t t;
  pthread_create(&t, NULL, cancel_token_thread, &tc);

  struct collected c;
  collected_init(&c);
  c.first_chunk = &tc.first_chunk;
  provd_done *done = NULL;
  provd_error *err = NULL;
  provd_status st = provd_client_generate(client, req, on_chunk, &c, tc.token, &done, &err);
  pthread_join(t, NULL);
  CHECK(st == PROVD_CANCELLED, "%s (%s)", provd_status_name(st), message(err));
  CHECK(done == NULL && c.calls >= 1, "calls %u", c.calls);
  uint32_t chunks = 0;
  bool known = false;
  provd_error_chunks(err, &chunks, &known);
  CHECK(known && chunks >= 1, "chunks %u", chunks);
  provd_usage usage;
  CHECK(provd_error_usage(err, &usage, &known) == PROVD_OK && known &&
            usage.prompt_tokens == 3,
        "usage %u", usage.prompt_tokens);
  bool retryable = true;
  CHECK(provd_error_retryable(err, &retryable) == PROVD_OK && !retryable, "not retryable");
  provd_error_free(err);

  /* A cancelled token stays cancelled: the next generation does not start. */
  bool cancelled = false;
  CHECK(provd_cancel_token_is_cancelled(tc.token, &cancelled) == PROVD_OK && cancelled, "token");
  collected_init(&c);
  st = provd_client_generate(client, req, on_chunk, &c, tc.token, NULL, &err);
  CHECK(st == PROVD_CANCELLED && c.calls == 0, "%s", provd_status_name(st));
  provd_error_free(err);
  sem_destroy(&tc.first_chunk);
  provd_cancel_token_free(tc.token);
  provd_request_free(req);
}

struct worker {
  provd_client *client;
  uint32_t chunks;
  struct collected c;
  provd_status status;
};

static void *generate_thread(void *arg) {
  struct worker *w = arg;
  char json[128];
  snprintf(json, sizeof json, "{\"numbered\": true, \"chunks\": %u}", w->chunks);
  provd_request *req = mock_request("count for me", json);
  collected_init(&w->c);
  w->status = provd_client_generate(w->client, req, on_chunk, &w->c, NULL, NULL, NULL);
  provd_request_free(req);
  return NULL;
}

static void test_concurrent_generations_on_one_client(provd_client *client) {
  enum { THREADS = 4 };
  static struct worker workers[THREADS];
  pthread_t threads[THREADS];
  for (int i = 0; i < THREADS; i++) {
    workers[i].client = client;
    workers[i].chunks = 30 + (uint32_t)i;
    pthread_create(&threads[i], NULL, generate_thread, &workers[i]);
  }
  for (int i = 0; i < THREADS; i++) {
    pthread_join(threads[i], NULL);
    char expected[512];
    numbered_text(expected, sizeof expected, workers[i].chunks);
    CHECK(workers[i].status == PROVD_OK, "thread %d: %s", i, provd_status_name(workers[i].status));
    CHECK(strcmp(workers[i].c.text, expected) == 0 && workers[i].c.indexes_in_order,
          "thread %d got %s", i, workers[i].c.text);
  }
}

static void test_lists_and_status(provd_client *client) {
  provd_error *err = NULL;
  CHECK(provd_client_ping(client, &err) == PROVD_OK, "ping: %s", message(err));

  provd_provider_list *providers = NULL;
  CHECK(provd_client_list_providers(client, &providers, &err) == PROVD_OK, "%s", message(err));
  size_t n = 0;
  CHECK(provd_provider_list_len(providers, &n) == PROVD_OK && n == 1, "providers %zu", n);
  provd_provider_info p;
  CHECK(provd_provider_list_get(providers, 0, &p) == PROVD_OK, "get");
  CHECK(str_eq(p.id, "mock") && str_eq(p.kind, "mock") && str_eq(p.default_model, "mock-1") &&
            p.is_default && p.capabilities_len == 7,
        "provider %s", p.id.data);
  provd_str cap;
  CHECK(provd_provider_list_capability(providers, 0, 0, &cap) == PROVD_OK &&
            str_eq(cap, "streaming"),
        "capability");
  CHECK(provd_provider_list_capability(providers, 0, 1, &cap) == PROVD_OK && str_eq(cap, "tools"),
        "the mock type's capabilities");
  CHECK(provd_provider_list_get(providers, 1, &p) == PROVD_INVALID_ARGUMENT, "out of range");
  CHECK(provd_provider_list_capability(providers, 0, 7, &cap) == PROVD_INVALID_ARGUMENT, "capability index");
  provd_provider_list_free(providers);

  provd_model_list *models = NULL;
  CHECK(provd_client_list_models(client, NULL, 0, &models, &err) == PROVD_OK, "%s", message(err));
  CHECK(provd_model_list_len(models, &n) == PROVD_OK && n == 1, "models %zu", n);
  provd_model_info m;
  CHECK(provd_model_list_get(models, 0, &m) == PROVD_OK && str_eq(m.id, "mock-1") &&
            str_eq(m.provider, "mock") && m.display_name.data != NULL,
        "model");
  /* A model reports its provider's capabilities. */
  CHECK(provd_model_list_capabilities_len(models, 0, &n) == PROVD_OK && n == 7,
        "model capabilities %zu", n);
  CHECK(provd_model_list_capability(models, 0, 1, &cap) == PROVD_OK && str_eq(cap, "tools"),
        "the model's capabilities");
  CHECK(provd_model_list_capability(models, 0, 7, &cap) == PROVD_INVALID_ARGUMENT,
        "capability index");
  CHECK(provd_model_list_capabilities_len(models, 1, &n) == PROVD_INVALID_ARGUMENT,
        "model index");
  CHECK(provd_model_list_failures_len(models, &n) == PROVD_OK && n == 0, "failures %zu", n);
  provd_str failed_provider;
  provd_error *failure = NULL;
  CHECK(provd_model_list_failure(models, 0, &failed_provider, &failure) == PROVD_INVALID_ARGUMENT &&
            failure == NULL,
        "failure out of range");
  provd_model_list_free(models);

  /* One provider by name; an unknown one is not_found. */
  CHECK(provd_client_list_models(client, LIT("mock"), &models, NULL) == PROVD_OK, "mock models");
  provd_model_list_free(models);
  provd_status st = provd_client_list_models(client, LIT("nope"), &models, &err);
  CHECK(st == PROVD_NOT_FOUND && models == NULL, "%s", provd_status_name(st));
  CHECK(strstr(message(err), "nope") != NULL, "%s", message(err));
  provd_error_free(err);

  provd_daemon_status *status = NULL;
  CHECK(provd_client_status(client, &status, &err) == PROVD_OK, "%s", message(err));
  provd_daemon_info info;
  CHECK(provd_daemon_status_get(status, &info) == PROVD_OK, "get");
  CHECK(info.protocol_version == PROVD_PROTOCOL_VERSION && info.pid > 0 &&
            info.connections >= 1 && info.instances_len >= 1 && info.daemon_version.len > 0,
        "info");
  provd_instance_info inst;
  CHECK(provd_daemon_status_instance(status, 0, &inst) == PROVD_OK && str_eq(inst.provider, "mock") &&
            str_eq(inst.state, "ready") && inst.metrics.requests >= 1,
        "instance %s", inst.state.data);
  provd_cache_info cache;
  CHECK(provd_daemon_status_cache(status, &cache) == PROVD_OK && cache.providers_len >= 1 &&
            cache.instances_omitted == 0 && cache.max_provider_instances == 256,
        "cache");
  provd_provider_counters counters;
  CHECK(provd_daemon_status_provider(status, 0, &counters) == PROVD_OK &&
            str_eq(counters.provider, "mock") && counters.instances >= 1 &&
            counters.metrics.requests >= inst.metrics.requests,
        "provider counters");
  CHECK(provd_daemon_status_provider(status, cache.providers_len, &counters) == PROVD_INVALID_ARGUMENT,
        "provider index out of range");
  provd_daemon_status_free(status);
}

static void test_connect_errors(void) {
  provd_client *client = (provd_client *)&client; /* not NULL: must be reset */
  provd_error *err = NULL;

  /* Daemon down: nothing listens at the path. */
  provd_status st = provd_client_connect(missing_path, strlen(missing_path), &client, &err);
  CHECK(st == PROVD_UNAVAILABLE, "%s", provd_status_name(st));
  CHECK(client == NULL, "client_out is NULL on failure");
  CHECK(provd_error_code(err) == PROVD_UNAVAILABLE, "code");
  CHECK(strstr(message(err), missing_path) != NULL, "message names the path: %s", message(err));
  bool retryable = false;
  CHECK(provd_error_retryable(err, &retryable) == PROVD_OK && retryable, "retryable");
  provd_error_free(err);

  /* Bad paths: a NUL inside, empty. */
  st = provd_client_connect(LIT("/tmp/a\0b.sock"), &client, &err);
  CHECK(st == PROVD_INVALID_ARGUMENT && client == NULL, "%s", provd_status_name(st));
  CHECK(strstr(message(err), "provd_client_connect") != NULL, "%s", message(err));
  provd_error_free(err);
  st = provd_client_connect("", 0, &client, NULL);
  CHECK(st == PROVD_INVALID_ARGUMENT, "%s", provd_status_name(st));
  /* Longer than a socket address holds (108 bytes on Linux). */
  char long_path[300];
  memset(long_path, 'x', sizeof long_path);
  long_path[0] = '/';
  st = provd_client_connect(long_path, sizeof long_path, &client, &err);
  CHECK(st == PROVD_INVALID_ARGUMENT && client == NULL, "%s", provd_status_name(st));
  CHECK(strstr(message(err), "socket path") != NULL, "%s", message(err));
  provd_error_free(err);
  /* A directory is no socket. */
  st = provd_client_connect(LIT("/"), &client, &err);
  CHECK(st == PROVD_UNAVAILABLE && client == NULL, "%s", provd_status_name(st));
  provd_error_free(err);

  /* NULL out-pointer. */
  st = provd_client_connect(socket_path, strlen(socket_path), NULL, &err);
  CHECK(st == PROVD_NULL_ARGUMENT, "%s", provd_status_name(st));
  CHECK(strstr(message(err), "client_out") != NULL, "%s", message(err));
  provd_error_free(err);
}

static void test_null_arguments(provd_client *client) {
  provd_error *err = NULL;
  provd_request *req = mock_request("hi", "{}");
  struct collected c;
  collected_init(&c);

  CHECK(provd_client_ping(NULL, &err) == PROVD_NULL_ARGUMENT, "ping");
  CHECK(strcmp(message(err), "provd_client_ping: argument `client` is NULL") == 0, "%s",
        message(err));
  provd_error_free(err);
  CHECK(provd_client_generate(client, NULL, on_chunk, &c, NULL, NULL, NULL) == PROVD_NULL_ARGUMENT,
        "no request");
  CHECK(provd_client_generate(client, req, NULL, &c, NULL, NULL, &err) == PROVD_NULL_ARGUMENT,
        "no callback");
  CHECK(strstr(message(err), "on_chunk") != NULL, "%s", message(err));
  provd_error_free(err);
  CHECK(provd_stream_start(NULL, req, NULL, NULL) == PROVD_NULL_ARGUMENT, "start");
  CHECK(provd_stream_next(NULL, NULL, NULL) == PROVD_NULL_ARGUMENT, "next");
  CHECK(provd_stream_finish(NULL, NULL, NULL) == PROVD_NULL_ARGUMENT, "finish");
  CHECK(provd_stream_cancel(NULL, NULL) == PROVD_NULL_ARGUMENT, "cancel");
  CHECK(provd_request_new(NULL, NULL) == PROVD_NULL_ARGUMENT, "request_new");
  CHECK(provd_request_set_prompt(NULL, LIT("x"), NULL) == PROVD_NULL_ARGUMENT, "set_prompt");
  CHECK(provd_request_add_message(req, PROVD_ROLE_USER, NULL, 3, NULL) == PROVD_NULL_ARGUMENT,
        "message content");
  CHECK(provd_request_add_stop(req, NULL, 0, NULL) == PROVD_NULL_ARGUMENT, "stop");
  CHECK(provd_cancel_token_cancel(NULL, NULL) == PROVD_NULL_ARGUMENT, "token");
  CHECK(provd_client_list_providers(client, NULL, NULL) == PROVD_NULL_ARGUMENT, "list_out");
  CHECK(provd_client_status(NULL, NULL, NULL) == PROVD_NULL_ARGUMENT, "status");
  provd_str s;
  CHECK(provd_error_message(NULL, &s) == PROVD_NULL_ARGUMENT, "error_message");
  CHECK(provd_error_code(NULL) == PROVD_NULL_ARGUMENT, "error_code");
  CHECK(provd_done_usage(NULL, NULL) == PROVD_NULL_ARGUMENT, "done_usage");
  CHECK(provd_provider_list_len(NULL, NULL) == PROVD_NULL_ARGUMENT, "list_len");
  /* Free functions accept NULL. */
  provd_error_free(NULL);
  provd_done_free(NULL);
  provd_request_free(NULL);
  provd_stream_free(NULL);
  provd_cancel_token_free(NULL);
  provd_provider_list_free(NULL);
  provd_model_list_free(NULL);
  provd_daemon_status_free(NULL);
  provd_client_free(NULL);
  provd_client_close(NULL);
  provd_request_free(req);
}

static void test_bad_input(provd_client *client) {
  provd_error *err = NULL;
  provd_request *req = mock_request("hi", "{}");

  /* Invalid UTF-8 is an error code, and the request keeps its old prompt. */
  CHECK(provd_request_set_prompt(req, LIT("ok\xff\xfe"), &err) == PROVD_INVALID_UTF8, "utf8");
  CHECK(strstr(message(err), "offset 2") != NULL, "%s", message(err));
  provd_error_free(err);
  CHECK(provd_request_set_provider(req, LIT("\xc3"), NULL) == PROVD_INVALID_UTF8, "truncated");
  CHECK(provd_client_list_models(client, LIT("\x80"), NULL, NULL) == PROVD_NULL_ARGUMENT,
        "list_out is checked first");
  provd_model_list *models = NULL;
  CHECK(provd_client_list_models(client, LIT("\x80"), &models, NULL) == PROVD_INVALID_UTF8, "provider utf8");
  /* The prompt is still "hi": the generation works. */
  struct collected c;
  collected_init(&c);
  CHECK(provd_client_generate(client, req, on_chunk, &c, NULL, NULL, NULL) == PROVD_OK, "still ok");

  /* Argument values the library refuses. */
  CHECK(provd_request_set_additional_params_json(req, LIT("{not json"), &err) ==
            PROVD_INVALID_ARGUMENT,
        "bad json");
  CHECK(strstr(message(err), "not valid JSON") != NULL, "%s", message(err));
  provd_error_free(err);
  CHECK(provd_request_set_additional_params_json(req, LIT("[1]"), NULL) == PROVD_INVALID_ARGUMENT,
        "json array");
  CHECK(provd_request_add_message(req, 7, LIT("x"), NULL) == PROVD_INVALID_ARGUMENT, "role");
  CHECK(provd_request_set_temperature(req, NAN, NULL) == PROVD_INVALID_ARGUMENT, "NaN");
  provd_request_free(req);

  /* Daemon-side refusals: a request without prompt or messages. */
  CHECK(provd_request_new(&req, NULL) == PROVD_OK, "new");
  provd_status st = provd_client_generate(client, req, on_chunk, &c, NULL, NULL, &err);
  CHECK(st == PROVD_INVALID_REQUEST, "%s", provd_status_name(st));
  CHECK(strstr(message(err), "prompt or messages") != NULL, "%s", message(err));
  provd_error_free(err);
  provd_request_free(req);
}

static void test_unknown_provider(provd_client *client) {
  provd_request *req = mock_request("hi", "{}");
  CHECK(provd_request_set_provider(req, LIT("nope"), NULL) == PROVD_OK, "provider");
  struct collected c;
  collected_init(&c);
  provd_done *done = NULL;
  provd_error *err = NULL;
  provd_status st = provd_client_generate(client, req, on_chunk, &c, NULL, &done, &err);
  CHECK(st == PROVD_NOT_FOUND && done == NULL && c.calls == 0, "%s", provd_status_name(st));
  CHECK(strstr(message(err), "nope") != NULL, "%s", message(err));
  uint32_t chunks = 99;
  bool known = false;
  CHECK(provd_error_chunks(err, &chunks, &known) == PROVD_OK && known && chunks == 0, "chunks");
  provd_error_free(err);

  /* The pull API reports it from next, and again from finish. */
  provd_stream *stream = NULL;
  CHECK(provd_stream_start(client, req, &stream, NULL) == PROVD_OK, "start");
  provd_str chunk;
  st = provd_stream_next(stream, &chunk, &err);
  CHECK(st == PROVD_NOT_FOUND && chunk.data == NULL, "%s", provd_status_name(st));
  provd_error_free(err);
  CHECK(provd_stream_next(stream, &chunk, NULL) == PROVD_NOT_FOUND, "same error again");
  CHECK(provd_stream_finish(stream, NULL, NULL) == PROVD_NOT_FOUND, "finish");
  provd_stream_free(stream);
  provd_request_free(req);
}

static void test_daemon_error_details(provd_client *client) {
  provd_request *req = mock_request(
      "count for me",
      "{\"numbered\": true, \"chunks\": 6, \"fault\": \"mid_stream\", \"fault_after_chunks\": 2, "
      "\"fault_code\": \"rate_limited\"}");
  struct collected c;
  collected_init(&c);
  provd_error *err = NULL;
  provd_status st = provd_client_generate(client, req, on_chunk, &c, NULL, NULL, &err);
  CHECK(st == PROVD_RATE_LIMITED && c.calls == 2, "%s after %u", provd_status_name(st), c.calls);
  bool retryable = false, known = false;
  /* Chunks were delivered: the error never invites a plain retry (PROTOCOL.md 9.2). */
  CHECK(provd_error_retryable(err, &retryable) == PROVD_OK && !retryable, "not retryable");
  uint32_t chunks = 0;
  CHECK(provd_error_chunks(err, &chunks, &known) == PROVD_OK && known && chunks == 2, "chunks");
  uint64_t after = 1;
  CHECK(provd_error_retry_after_ms(err, &after, &known) == PROVD_OK && !known && after == 0,
        "no retry-after hint from the mock");
  provd_usage usage;
  CHECK(provd_error_usage(err, &usage, &known) == PROVD_OK && known && usage.prompt_tokens == 3,
        "usage");
  provd_error_free(err);
  provd_request_free(req);

  /* A bad mock option: the daemon's invalid_request, message naming the option. */
  req = mock_request("x", "{\"chunks\": \"many\"}");
  st = provd_client_generate(client, req, on_chunk, &c, NULL, NULL, &err);
  CHECK(st == PROVD_INVALID_REQUEST, "%s", provd_status_name(st));
  CHECK(strstr(message(err), "additional_params.mock.chunks") != NULL, "%s", message(err));
  provd_error_free(err);
  provd_request_free(req);
}

/* A listening socket in a fresh private directory (mode 0700, so it passes the client's
 * trust rule); `path` receives its path. Nothing ever accepts on it unless the caller does. */
static int private_listener(char *path, size_t size, char *dir, size_t dir_size) {
  snprintf(dir, dir_size, "/tmp/provd-c-test-XXXXXX");
  if (mkdtemp(dir) == NULL) {
    return -1;
  }
  snprintf(path, size, "%s/peer.sock", dir);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
  if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 8) != 0) {
    return -1;
  }
  return fd;
}

static void remove_listener(int fd, const char *path, const char *dir) {
  close(fd);
  unlink(path);
  rmdir(dir);
}

/* What a fake peer does once it accepted: stay silent, or answer with bytes that are not
 * provd frames (an HTTP server on the wrong socket). */
struct fake_peer {
  int listener;
  bool speak_http;
  sem_t client_done;
};

static void *fake_peer_main(void *arg) {
  struct fake_peer *p = arg;
  int conn = accept(p->listener, NULL, NULL);
  if (conn >= 0 && p->speak_http) {
    char hello[4];
    if (read(conn, hello, sizeof hello) == (ssize_t)sizeof hello) {
      static const char reply[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
      if (write(conn, reply, sizeof reply - 1) < 0) {
        perror("write");
      }
    }
  }
  /* Hold the connection open until the client has given up. */
  sem_wait(&p->client_done);
  if (conn >= 0) {
    close(conn);
  }
  return NULL;
}

static void test_deadlines_and_strange_peers(void) {
  provd_connect_options defaults = provd_connect_options_default();
  CHECK(defaults.connect_timeout_ms == 5000 && defaults.hello_timeout_ms == 5000 &&
            defaults.call_timeout_ms == 0,
        "defaults %u %u %u", defaults.connect_timeout_ms, defaults.hello_timeout_ms,
        defaults.call_timeout_ms);
  provd_connect_options quick = defaults;
  quick.hello_timeout_ms = 200;

  char path[128], dir[64];
  int fd = private_listener(path, sizeof path, dir, sizeof dir);
  CHECK(fd >= 0, "listener");
  provd_client *client = (provd_client *)&client;
  provd_error *err = NULL;

  /* Never accepts: connect() completes from the backlog, the hello goes unanswered. */
  provd_status st = provd_client_connect_with_options(path, strlen(path), &quick, &client, &err);
  CHECK(st == PROVD_TIMEOUT && client == NULL, "%s (%s)", provd_status_name(st), message(err));
  CHECK(strstr(message(err), "did not answer the hello") != NULL, "%s", message(err));
  provd_error_free(err);

  /* Accepts and stays silent. A fresh listener: the old one's backlog still holds the
   * connection the client gave up on. */
  remove_listener(fd, path, dir);
  fd = private_listener(path, sizeof path, dir, sizeof dir);
  struct fake_peer peer = {.listener = fd, .speak_http = false};
  sem_init(&peer.client_done, 0, 0);
  pthread_t thread;
  pthread_create(&thread, NULL, fake_peer_main, &peer);
  st = provd_client_connect_with_options(path, strlen(path), &quick, &client, &err);
  CHECK(st == PROVD_TIMEOUT && client == NULL, "%s (%s)", provd_status_name(st), message(err));
  provd_error_free(err);
  sem_post(&peer.client_done);
  pthread_join(thread, NULL);

  /* Answers with bytes that are not provd frames: a framing error, as documented. */
  remove_listener(fd, path, dir);
  fd = private_listener(path, sizeof path, dir, sizeof dir);
  peer.listener = fd;
  peer.speak_http = true;
  pthread_create(&thread, NULL, fake_peer_main, &peer);
  st = provd_client_connect_with_options(path, strlen(path), NULL, &client, &err);
  CHECK(st == PROVD_PROTOCOL_ERROR && client == NULL, "%s (%s)", provd_status_name(st),
        message(err));
  provd_error_free(err);
  sem_post(&peer.client_done);
  pthread_join(thread, NULL);
  sem_destroy(&peer.client_done);
  remove_listener(fd, path, dir);
}

static void test_connection_limits(void) {
  provd_client *client = connect_or_die();
  uint32_t max_streams = 0, max_frame = 0;
  CHECK(provd_client_max_streams(client, &max_streams) == PROVD_OK && max_streams == 64,
        "max_streams %u", max_streams);
  CHECK(provd_client_max_frame_bytes(client, &max_frame) == PROVD_OK && max_frame >= 1024,
        "max_frame_bytes %u", max_frame);
  CHECK(provd_client_max_streams(NULL, &max_streams) == PROVD_NULL_ARGUMENT, "NULL client");
  CHECK(provd_client_max_frame_bytes(client, NULL) == PROVD_NULL_ARGUMENT, "NULL out");

  /* The cap: max_streams generations run at once; one more is overloaded. */
  provd_request *req =
      mock_request("hold", "{\"chunks\": 2, \"chunk_delay_ms\": 600000, \"text\": \"a b\"}");
  provd_stream *streams[65] = {NULL};
  provd_str chunk;
  bool all_running = true;
  for (uint32_t i = 0; i < max_streams && i < 64; i++) {
    all_running &= provd_stream_start(client, req, &streams[i], NULL) == PROVD_OK &&
                   provd_stream_next(streams[i], &chunk, NULL) == PROVD_OK && chunk.data != NULL;
  }
  CHECK(all_running, "64 streams running");
  provd_error *err = NULL;
  provd_status st = provd_stream_start(client, req, &streams[64], &err);
  if (st == PROVD_OK) {
    st = provd_stream_next(streams[64], &chunk, &err);
  }
  CHECK(st == PROVD_OVERLOADED, "the 65th: %s (%s)", provd_status_name(st), message(err));
  provd_error_free(err);
  for (int i = 0; i < 65; i++) {
    provd_stream_free(streams[i]);
  }
  provd_request_free(req);

  /* A request larger than max_frame_bytes fails at start, naming the limit. */
  size_t big_len = (size_t)max_frame + 1;
  char *big = malloc(big_len);
  memset(big, 'a', big_len);
  req = NULL;
  CHECK(provd_request_new(&req, NULL) == PROVD_OK, "request_new");
  CHECK(provd_request_set_prompt(req, big, big_len, NULL) == PROVD_OK, "a big prompt is set");
  provd_stream *stream = NULL;
  st = provd_stream_start(client, req, &stream, &err);
  if (st == PROVD_OK) {
    st = provd_stream_next(stream, &chunk, &err);
  }
  CHECK(st == PROVD_INVALID_REQUEST && strstr(message(err), "max_frame_bytes") != NULL,
        "%s (%s)", provd_status_name(st), message(err));
  provd_error_free(err);
  provd_stream_free(stream);
  provd_request_free(req);
  free(big);
  /* provd_client_close is the older name of provd_client_free, kept as an alias: it
   * frees (valgrind would report the client otherwise). */
  provd_client_close(client);
}

/* A client does not survive fork(); a new client in the child works. */
static void test_new_client_after_fork(provd_client *parent_client) {
  int report[2];
  CHECK(pipe(report) == 0, "pipe");
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    provd_client *child = NULL;
    provd_status st = provd_client_connect(socket_path, strlen(socket_path), &child, NULL);
    char ok = st == PROVD_OK && provd_client_ping(child, NULL) == PROVD_OK;
    provd_client_free(child);
    /* The parent's client is left alone here, as the header says. Its threads did not
     * come across the fork, so a leak checker following the child counts its memory as
     * lost and may change the exit status: the result goes through the pipe instead. */
    if (write(report[1], &ok, 1) != 1) {
      _exit(1);
    }
    _exit(0);
  }
  close(report[1]);
  char ok = 0;
  CHECK(pid > 0 && read(report[0], &ok, 1) == 1 && ok == 1, "the child's own client works");
  int wstatus = 0;
  CHECK(waitpid(pid, &wstatus, 0) == pid, "the child ended");
  close(report[0]);
  CHECK(provd_client_ping(parent_client, NULL) == PROVD_OK, "the parent's client still works");
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s SOCKET_PATH MISSING_SOCKET_PATH\n", argv[0]);
    return 2;
  }
  socket_path = argv[1];
  missing_path = argv[2];

  test_versions();
  test_connect_errors();
  provd_client *client = connect_or_die();
  test_callback_stream(client);
  test_messages_and_sampling(client);
  test_callback_stop(client);
  test_callback_may_call_the_library(client);
  test_pull_stream(client);
  test_tool_round_trip(client);
  test_structured_output_reasoning_and_images(client);
  test_stream_outlives_its_client();
  test_stream_cancel_from_another_thread(client);
  test_token_cancel_from_another_thread(client);
  test_concurrent_generations_on_one_client(client);
  test_lists_and_status(client);
  test_null_arguments(client);
  test_bad_input(client);
  test_unknown_provider(client);
  test_daemon_error_details(client);
  test_deadlines_and_strange_peers();
  test_connection_limits();
  test_new_client_after_fork(client);
  provd_client_free(client);

  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
