// A small RAII wrapper over libprovd for C++17: every handle lives in a unique_ptr with
// its free function, every failure becomes a provd::Error exception carrying the status
// and the library's message, and chunk callbacks are any callable. Header-only; an
// example, not a supported API (tests/cpp/example.cpp uses it, the test suite builds it
// with -Wall -Wextra -Werror).
#ifndef PROVD_HPP
#define PROVD_HPP

#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "provd.h"

namespace provd {

template <typename T, void (*Free)(T *)>
struct Deleter {
  void operator()(T *p) const noexcept { Free(p); }
};

template <typename T, void (*Free)(T *)>
using Owned = std::unique_ptr<T, Deleter<T, Free>>;

using ErrorPtr = Owned<provd_error, provd_error_free>;

inline std::string_view view(provd_str s) {
  return s.data == nullptr ? std::string_view() : std::string_view(s.data, s.len);
}

// A failed call: the status, the message, and whether a retry may help.
class Error : public std::runtime_error {
 public:
  Error(provd_status status, const provd_error *err)
      : std::runtime_error(describe(status, err)), status_(status) {
    if (err != nullptr) {
      provd_error_retryable(err, &retryable_);
    }
  }

  provd_status status() const noexcept { return status_; }
  const char *name() const noexcept { return provd_status_name(status_); }
  bool retryable() const noexcept { return retryable_; }

 private:
  static std::string describe(provd_status status, const provd_error *err) {
    std::string out = provd_status_name(status);
    provd_str message{};
    if (err != nullptr && provd_error_message(err, &message) == PROVD_OK) {
      out += ": ";
      out += view(message);
    }
    return out;
  }

  provd_status status_;
  bool retryable_ = false;
};

// Throws for any status but PROVD_OK; always frees the error object.
inline void check(provd_status status, provd_error *err) {
  ErrorPtr owned(err);
  if (status != PROVD_OK) {
    throw Error(status, owned.get());
  }
}

// One tool call the model made, copied out of the done result.
struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text
};

// How a successful generation ended: usage, finish reason, who answered, the tool calls,
// the reasoning (whole, when not streamed and shown) and the provider's opaque state.
struct Done {
  provd_usage usage{};
  provd_finish_reason finish_reason = PROVD_FINISH_OTHER;
  std::string model;
  std::vector<ToolCall> tool_calls;
  std::optional<std::string> reasoning;
  std::optional<uint32_t> reasoning_tokens;
  std::optional<std::string> provider_state_json;

  static Done from(provd_done *raw) {
    Owned<provd_done, provd_done_free> done(raw);
    Done out;
    provd_done_usage(done.get(), &out.usage);
    provd_done_finish_reason(done.get(), &out.finish_reason);
    provd_str model{};
    provd_done_model(done.get(), &model);
    out.model = std::string(view(model));
    size_t calls = 0;
    provd_done_tool_calls_len(done.get(), &calls);
    for (size_t i = 0; i < calls; i++) {
      provd_tool_call call{};
      provd_done_tool_calls_get(done.get(), i, &call);
      out.tool_calls.push_back(ToolCall{std::string(view(call.id)), std::string(view(call.name)),
                                        std::string(view(call.arguments))});
    }
    out.reasoning = optional_string(done.get(), provd_done_reasoning);
    out.provider_state_json = optional_string(done.get(), provd_done_provider_state_json);
    bool present = false;
    uint32_t tokens = 0;
    provd_done_reasoning_tokens(done.get(), &present, &tokens);
    if (present) {
      out.reasoning_tokens = tokens;
    }
    return out;
  }

 private:
  static std::optional<std::string> optional_string(
      const provd_done *done, provd_status (*get)(const provd_done *, provd_str *)) {
    provd_str s{};
    if (get(done, &s) != PROVD_OK || s.data == nullptr) {
      return std::nullopt;
    }
    return std::string(view(s));
  }
};

class Request {
 public:
  Request() {
    provd_request *raw = nullptr;
    provd_error *err = nullptr;
    check(provd_request_new(&raw, &err), err);
    request_.reset(raw);
  }

  Request &prompt(std::string_view text) {
    return set(provd_request_set_prompt, text);
  }
  Request &provider(std::string_view id) {
    return set(provd_request_set_provider, id);
  }
  Request &model(std::string_view id) { return set(provd_request_set_model, id); }
  Request &system(std::string_view text) {
    return set(provd_request_set_system, text);
  }
  Request &params_json(std::string_view json) {
    return set(provd_request_set_additional_params_json, json);
  }
  Request &max_tokens(uint32_t n) {
    provd_error *err = nullptr;
    check(provd_request_set_max_tokens(request_.get(), n, &err), err);
    return *this;
  }

  // Conversation turns.
  Request &user(std::string_view text) { return turn(PROVD_ROLE_USER, text); }
  Request &assistant(std::string_view text) { return turn(PROVD_ROLE_ASSISTANT, text); }

  // Tools as a JSON array of {"name", "description", "parameters"}; a tool choice:
  // "auto", "none", "required" or a tool's name.
  Request &tools_json(std::string_view json) {
    return set(provd_request_set_tools_json, json);
  }
  Request &tool_choice(std::string_view choice) {
    return set(provd_request_set_tool_choice, choice);
  }

  // The shape of the answer.
  Request &response_format_json(std::string_view json) {
    return set(provd_request_set_response_format_json, json);
  }
  Request &json_object() {
    provd_error *err = nullptr;
    check(provd_request_set_response_json_object(request_.get(), &err), err);
    return *this;
  }
  Request &json_schema(std::string_view name, std::string_view schema, bool strict = true) {
    provd_error *err = nullptr;
    check(provd_request_set_response_json_schema(request_.get(), name.data(), name.size(),
                                                 schema.data(), schema.size(), strict, &err),
          err);
    return *this;
  }

  // Reasoning: an effort, a token budget (0: none) and whether to see it.
  Request &reasoning(provd_effort effort, uint32_t budget_tokens, bool show) {
    provd_error *err = nullptr;
    check(provd_request_set_reasoning(request_.get(), effort, budget_tokens, show, &err), err);
    return *this;
  }

  // Images on the last (user) turn.
  Request &image_base64(std::string_view media_type, std::string_view data) {
    provd_error *err = nullptr;
    check(provd_request_add_image_base64(request_.get(), media_type.data(), media_type.size(),
                                         data.data(), data.size(), &err),
          err);
    return *this;
  }
  Request &image_url(std::string_view url) { return set(provd_request_add_image_url, url); }

  // The assistant turn a generation produced (its text, calls and provider state), and
  // the result of one of its calls.
  Request &turn_from(const Done &done, std::string_view text = {}) {
    assistant(text);
    for (const ToolCall &call : done.tool_calls) {
      provd_error *err = nullptr;
      check(provd_request_add_tool_call(request_.get(), call.id.data(), call.id.size(),
                                        call.name.data(), call.name.size(),
                                        call.arguments.data(), call.arguments.size(), &err),
            err);
    }
    if (done.provider_state_json) {
      set(provd_request_set_provider_state_json, *done.provider_state_json);
    }
    return *this;
  }
  Request &tool_result(std::string_view call_id, std::string_view content,
                       bool is_error = false) {
    provd_error *err = nullptr;
    check(provd_request_add_tool_result(request_.get(), call_id.data(), call_id.size(),
                                        content.data(), content.size(), is_error, &err),
          err);
    return *this;
  }

  const provd_request *get() const noexcept { return request_.get(); }

 private:
  using Setter = provd_status (*)(provd_request *, const char *, size_t, provd_error **);

  Request &set(Setter setter, std::string_view text) {
    provd_error *err = nullptr;
    check(setter(request_.get(), text.data(), text.size(), &err), err);
    return *this;
  }

  Request &turn(provd_role role, std::string_view text) {
    provd_error *err = nullptr;
    // An empty string_view may have no data pointer; the library wants one for "".
    const char *data = text.data() != nullptr ? text.data() : "";
    check(provd_request_add_message(request_.get(), role, data, text.size(), &err), err);
    return *this;
  }

  Owned<provd_request, provd_request_free> request_;
};

class Stream {
 public:
  explicit Stream(provd_stream *raw) : stream_(raw) {}

  // The next chunk, or nothing at the end; throws the error that ended the generation.
  std::optional<std::string_view> next() {
    provd_str text{};
    provd_error *err = nullptr;
    check(provd_stream_next(stream_.get(), &text, &err), err);
    if (text.data == nullptr) {
      return std::nullopt;
    }
    return view(text);
  }

  // The chunk next() returned last, with its kind and tool-call or reasoning piece;
  // its strings are valid until the next call on this stream.
  provd_chunk chunk() const {
    provd_chunk out{};
    check(provd_stream_chunk(stream_.get(), &out), nullptr);
    return out;
  }

  Done finish() {
    provd_done *done = nullptr;
    provd_error *err = nullptr;
    check(provd_stream_finish(stream_.get(), &done, &err), err);
    return Done::from(done);
  }

  // May be called from another thread while next() blocks.
  void cancel() const {
    provd_error *err = nullptr;
    check(provd_stream_cancel(stream_.get(), &err), err);
  }

 private:
  Owned<provd_stream, provd_stream_free> stream_;
};

class Client {
 public:
  // Connects to `path`, or to the default socket path when none is given.
  explicit Client(std::optional<std::string_view> path = std::nullopt) {
    provd_client *raw = nullptr;
    provd_error *err = nullptr;
    check(path ? provd_client_connect(path->data(), path->size(), &raw, &err)
               : provd_client_connect(nullptr, 0, &raw, &err),
          err);
    client_.reset(raw);
  }

  void ping() const {
    provd_error *err = nullptr;
    check(provd_client_ping(client_.get(), &err), err);
  }

  // Calls on_chunk(std::string_view) for each chunk on this thread; on_chunk returns
  // true to go on, false to stop (which ends in a provd::Error with PROVD_CANCELLED).
  // An exception thrown by on_chunk stops the generation and is rethrown here, so it
  // never unwinds through the C library.
  template <typename F>
  Done generate(const Request &request, F &&on_chunk) const {
    Callback<F> callback{std::forward<F>(on_chunk), nullptr};
    provd_done *done = nullptr;
    provd_error *err = nullptr;
    provd_status status = provd_client_generate(client_.get(), request.get(),
                                                &Callback<F>::trampoline, &callback, nullptr,
                                                &done, &err);
    if (callback.exception) {
      provd_error_free(err);
      provd_done_free(done);
      std::rethrow_exception(callback.exception);
    }
    check(status, err);
    return Done::from(done);
  }

  // Like generate(), but on_chunk receives each whole chunk (const provd_chunk &): text,
  // a piece of a tool call or a piece of reasoning.
  template <typename F>
  Done generate_events(const Request &request, F &&on_chunk) const {
    Callback<F> callback{std::forward<F>(on_chunk), nullptr};
    provd_done *done = nullptr;
    provd_error *err = nullptr;
    provd_status status = provd_client_generate_events(client_.get(), request.get(),
                                                       &Callback<F>::event_trampoline,
                                                       &callback, nullptr, &done, &err);
    if (callback.exception) {
      provd_error_free(err);
      provd_done_free(done);
      std::rethrow_exception(callback.exception);
    }
    check(status, err);
    return Done::from(done);
  }

  Stream stream(const Request &request) const {
    provd_stream *raw = nullptr;
    provd_error *err = nullptr;
    check(provd_stream_start(client_.get(), request.get(), &raw, &err), err);
    return Stream(raw);
  }

 private:
  template <typename F>
  struct Callback {
    F on_chunk;
    std::exception_ptr exception;

    static int trampoline(void *userdata, const char *text, size_t len, uint32_t) noexcept {
      auto *self = static_cast<Callback *>(userdata);
      try {
        return self->on_chunk(std::string_view(text, len)) ? PROVD_CONTINUE : PROVD_STOP;
      } catch (...) {
        self->exception = std::current_exception();
        return PROVD_STOP;
      }
    }

    static int event_trampoline(void *userdata, const provd_chunk *chunk) noexcept {
      auto *self = static_cast<Callback *>(userdata);
      try {
        return self->on_chunk(*chunk) ? PROVD_CONTINUE : PROVD_STOP;
      } catch (...) {
        self->exception = std::current_exception();
        return PROVD_STOP;
      }
    }
  };

  Owned<provd_client, provd_client_free> client_;
};

}  // namespace provd

#endif  // PROVD_HPP
