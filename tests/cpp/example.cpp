// Streams generations from the mock provider through the RAII wrapper in provd.hpp: one
// with a lambda callback, one pulled chunk by chunk, and one that fails and is caught as
// a provd::Error. Built with -std=c++17 -Wall -Wextra -Werror by tests/tests/ffi.rs.
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
