// Streams generations from the mock provider through the RAII wrapper in provd.hpp: one
// with a lambda callback, one pulled chunk by chunk, a tool round trip (the call seen in
// pieces, then answered from its result), a JSON answer, and one that fails and is
// caught as a provd::Error. Built with -std=c++17 -Wall -Wextra -Werror by tests/tests/ffi.rs.
//
// Usage: provd_example [SOCKET_PATH]
#include <iostream>
#include <optional>
#include <string>

#include "provd.hpp"

int main(int argc, char **argv) {
  try {
    provd::Client client(argc > 1 ? std::optional<std::string_view>(argv[1]) : std::nullopt);
    client.ping();

    provd::Request counting;
    counting.prompt("count for me").params_json(R"({"mock": {"numbered": true, "chunks": 8}})");
    std::string text;
    provd::Done done = client.generate(counting, [&](std::string_view chunk) {
      text += chunk;
      return true;
    });
    std::cout << "callback: " << text << "\n";
    std::cout << "usage: " << done.usage.prompt_tokens << " prompt + "
              << done.usage.completion_tokens << " completion tokens from " << done.model
              << ", finish " << provd_finish_reason_name(done.finish_reason) << "\n";

    provd::Request shorter;
    shorter.prompt("count for me").params_json(R"({"mock": {"numbered": true, "chunks": 5}})");
    provd::Stream stream = client.stream(shorter);
    std::cout << "stream: ";
    while (std::optional<std::string_view> chunk = stream.next()) {
      std::cout << *chunk;
    }
    std::cout << "\n";
    stream.finish();

    // A tool round trip: the call arrives in pieces, assembled in the done result; the
    // next turn sends the call and its result back, and the model answers from it.
    provd::Request ask;
    ask.user("What is the weather in Paris?")
        .tools_json(R"([{"name": "get_weather", "description": "The weather in a city",
                         "parameters": {"type": "object",
                                        "properties": {"city": {"type": "string"}}}}])");
    std::string arguments;
    provd::Done call_done = client.generate_events(ask, [&](const provd_chunk &chunk) {
      if (chunk.kind == PROVD_CHUNK_TOOL_CALL) {
        arguments.append(chunk.tool_call_arguments.data, chunk.tool_call_arguments.len);
      }
      return true;
    });
    if (call_done.finish_reason != PROVD_FINISH_TOOL_USE || call_done.tool_calls.size() != 1 ||
        call_done.tool_calls[0].arguments != arguments) {
      std::cerr << "no tool call, or its pieces differ from it: " << arguments << "\n";
      return 1;
    }
    const provd::ToolCall &call = call_done.tool_calls[0];
    std::cout << "tool call: " << call.name << " " << call.id << " " << call.arguments << "\n";
    ask.turn_from(call_done).tool_result(call.id, "18 degrees and sunny");
    std::string answer;
    client.generate(ask, [&](std::string_view chunk) {
      answer += chunk;
      return true;
    });
    std::cout << "tool answer: " << answer << "\n";

    provd::Request json;
    json.user("Describe Paris")
        .json_schema("city", R"({"type": "object", "properties": {"name": {"type": "string"}}})");
    std::string object;
    client.generate(json, [&](std::string_view chunk) {
      object += chunk;
      return true;
    });
    std::cout << "json: " << object << "\n";

    provd::Request unknown;
    unknown.prompt("hi").provider("no-such-provider");
    try {
      client.generate(unknown, [](std::string_view) { return true; });
      std::cerr << "an unknown provider did not fail\n";
      return 1;
    } catch (const provd::Error &e) {
      std::cout << "caught " << e.name() << ": " << e.what() << "\n";
      if (e.status() != PROVD_NOT_FOUND) {
        return 1;
      }
    }
  } catch (const std::exception &e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
