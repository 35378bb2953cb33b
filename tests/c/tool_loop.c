/*
 * A two-turn tool conversation and a JSON-schema answer through libprovd against
 * whatever model the daemon serves: the C ABI in front of an HTTP provider (the test
 * runs it against a daemon whose provider is a faithful OpenAI mock upstream).
 *
 *   tool_loop SOCKET MODEL
 *
 * Prints one line per step: `call ID NAME ARGUMENTS`, `answer TEXT`, `json TEXT`; exits 1
 * with the error's message on the first failure.
 */
#include <provd.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIT(s) (s), (sizeof(s) - 1)

static const char WEATHER_TOOLS[] =
    "[{\"name\": \"get_weather\", \"description\": \"The weather in a city\", \"parameters\": "
    "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, "
    "\"required\": [\"city\"]}}]";

static void fail(const char *what, provd_error *err) {
  provd_str message = {0};
  if (err != NULL) {
    provd_error_message(err, &message);
  }
  fprintf(stderr, "%s failed: %s\n", what, message.data != NULL ? message.data : "(no error)");
  exit(1);
}

#define MUST(call, what)                                                                   \
  do {                                                                                     \
    if ((call) != PROVD_OK) {                                                              \
      fail(what, err);                                                                     \
    }                                                                                      \
  } while (0)

/* Collects a generation's text. */
struct text {
  char buf[4096];
  size_t len;
};

static int on_event(void *userdata, const provd_chunk *chunk) {
  struct text *t = userdata;
  if (chunk->kind == PROVD_CHUNK_TEXT && t->len + chunk->text.len < sizeof t->buf) {
    memcpy(t->buf + t->len, chunk->text.data, chunk->text.len);
    t->len += chunk->text.len;
    t->buf[t->len] = '\0';
  }
  return PROVD_CONTINUE;
}

static provd_request *ask(const char *model, const char *text) {
  provd_error *err = NULL;
  provd_request *req = NULL;
  MUST(provd_request_new(&req, &err), "request_new");
  MUST(provd_request_set_model(req, model, strlen(model), &err), "set_model");
  MUST(provd_request_add_message(req, PROVD_ROLE_USER, text, strlen(text), &err), "user turn");
  return req;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: tool_loop SOCKET MODEL\n");
    return 2;
  }
  const char *model = argv[2];
  provd_error *err = NULL;
  provd_client *client = NULL;
  MUST(provd_client_connect(argv[1], strlen(argv[1]), &client, &err), "connect");

  /* Turn one: the model calls the tool. */
  provd_request *req = ask(model, "What is the weather in Paris?");
  MUST(provd_request_set_tools_json(req, LIT(WEATHER_TOOLS), &err), "set_tools_json");
  struct text seen = {.len = 0};
  provd_done *done = NULL;
  MUST(provd_client_generate_events(client, req, on_event, &seen, NULL, &done, &err), "turn one");
  size_t calls = 0;
  MUST(provd_done_tool_calls_len(done, &calls), "tool_calls_len");
  if (calls != 1) {
    fprintf(stderr, "%zu calls\n", calls);
    return 1;
  }
  provd_tool_call call;
  MUST(provd_done_tool_calls_get(done, 0, &call), "tool_calls_get");
  printf("call %s %s %s\n", call.id.data, call.name.data, call.arguments.data);

  /* Turn two: the call goes back with the tool's result; the model answers from it. */
  MUST(provd_request_add_turn_from_done(req, done, NULL, 0, &err), "add_turn_from_done");
  MUST(provd_request_add_tool_result(req, call.id.data, call.id.len, LIT("18 degrees and sunny"),
                                     false, &err),
       "add_tool_result");
  provd_done_free(done);
  seen.len = 0;
  seen.buf[0] = '\0';
  MUST(provd_client_generate_events(client, req, on_event, &seen, NULL, NULL, &err), "turn two");
  printf("answer %s\n", seen.buf);
  provd_request_free(req);

  /* A JSON answer matching a schema. */
  req = ask(model, "Name a capital");
  static const char schema[] =
      "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}, \"country\": "
      "{\"type\": \"string\"}}, \"required\": [\"city\", \"country\"]}";
  MUST(provd_request_set_response_json_schema(req, LIT("capital"), LIT(schema), true, &err),
       "set_response_json_schema");
  seen.len = 0;
  seen.buf[0] = '\0';
  MUST(provd_client_generate_events(client, req, on_event, &seen, NULL, NULL, &err), "json");
  printf("json %s\n", seen.buf);
  provd_request_free(req);
  provd_client_free(client);
  return 0;
}
