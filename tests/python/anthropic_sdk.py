#!/usr/bin/env python3
"""The official Anthropic SDK reads what provd's Anthropic codec writes.

    python anthropic_sdk.py FIXTURES.json REQUESTS_OUT.json

FIXTURES.json is written by the Rust test beside the codec
(daemon/src/server/http/anthropic.rs): the exact bytes the codec encodes for a streamed
answer, a stream that fails after its first chunk, a whole message and each error
status, with what the SDK must make of them. This script serves them from a small HTTP
server on 127.0.0.1 (chosen by the request's ``model``), points ``anthropic.Anthropic``
at it and checks the SDK's own typed results: the raw event stream, the ``stream()``
helper's text and final ``Message`` (usage included), the non-streamed ``Message``, and
the exception class, status and error type of every error. The request bodies the SDK
sent are written to REQUESTS_OUT.json, for the Rust test to parse with the codec.

It prints ``PASS name`` or ``FAIL name: reason`` per check and a last line
``N passed, M failed``, and exits 0 only when nothing failed. It needs the packages of
tests/python/requirements.txt; without them it exits with status 77.
"""

from __future__ import annotations

import json
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

# The exit status that says "cannot run here" (automake's skip code): the Rust test
# reports it as SKIPPED, or as a failure under CI, which installs the SDK.
SKIP_STATUS = 77
try:
    import anthropic
    from anthropic.types import Message
except ImportError as e:
    print(f"cannot import the Anthropic SDK: {e}")
    sys.exit(SKIP_STATUS)

# Which exception the SDK raises for each status provd's codec sends.
EXCEPTION_FOR_STATUS = {
    400: anthropic.BadRequestError,
    401: anthropic.AuthenticationError,
    403: anthropic.PermissionDeniedError,
    404: anthropic.NotFoundError,
    413: anthropic.ContentTooLargeError,
    429: anthropic.RateLimitError,
    499: anthropic.ClientClosedRequestError,
    500: anthropic.InternalServerError,
    502: anthropic.InternalServerError,
    503: anthropic.ServiceUnavailableError,
    504: anthropic.GatewayTimeoutError,
}

FIXTURES: Dict[str, Any] = {}
RECEIVED: List[Any] = []
CHECKS: List[Callable[[anthropic.Anthropic], None]] = []


def check(fn: Callable[[anthropic.Anthropic], None]) -> Callable[[anthropic.Anthropic], None]:
    CHECKS.append(fn)
    return fn


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


class Replies(BaseHTTPRequestHandler):
    """POST /v1/messages: the fixture named by the body's ``model``."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length))
        RECEIVED.append(body)
        reply = FIXTURES["replies"].get(body.get("model"))
        if self.path != "/v1/messages" or reply is None:
            self.send_error(500, f"no fixture for {self.path} {body.get('model')!r}")
            return
        data = reply["body"].encode()
        self.send_response(reply["status"])
        self.send_header("content-type", reply["content_type"])
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def ask(client: anthropic.Anthropic, model: str, **extra: Any) -> Any:
    return client.messages.create(
        model=model,
        max_tokens=64,
        messages=[{"role": "user", "content": "Hi"}],
        **extra,
    )


@check
def raw_stream_events_parse_as_the_sdks_typed_events(client: anthropic.Anthropic) -> None:
    want = FIXTURES["stream"]
    events = list(ask(client, "stream", stream=True))
    types = [e.type for e in events]
    # The SDK drops `ping` events itself.
    expect(types == want["event_types"], f"event types {types}")
    start = events[0]
    expect(start.message.id == want["id"], f"id {start.message.id}")
    expect(start.message.model == want["model"], f"model {start.message.model}")
    expect(start.message.usage.input_tokens == 0, "message_start input_tokens is 0")
    deltas = [e.delta.text for e in events if e.type == "content_block_delta"]
    expect("".join(deltas) == want["text"], f"deltas {deltas}")
    final = events[-2]
    expect(final.delta.stop_reason == want["stop_reason"], f"stop {final.delta.stop_reason}")
    expect(final.usage.input_tokens == want["input_tokens"], f"usage {final.usage}")
    expect(final.usage.output_tokens == want["output_tokens"], f"usage {final.usage}")
    for event in events:
        expect(isinstance(event, anthropic.BaseModel), f"untyped event {event!r}")


@check
def the_stream_helper_accumulates_text_and_the_final_message(client: anthropic.Anthropic) -> None:
    want = FIXTURES["stream"]
    with client.messages.stream(
        model="stream",
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "How are you?"},
        ],
        stop_sequences=["END"],
        metadata={"user_id": "someone"},
        # The newest SDKs no longer type these; older ones and other clients send them.
        extra_body={"temperature": 0.5, "top_p": 0.9},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    expect(text == want["text"], f"text {text!r}")
    expect(isinstance(final, Message), f"final is {type(final)}")
    expect(final.id == want["id"] and final.model == want["model"], f"{final.id} {final.model}")
    expect(final.role == "assistant", final.role)
    expect(len(final.content) == 1 and final.content[0].type == "text", f"{final.content}")
    expect(final.content[0].text == want["text"], f"{final.content[0].text!r}")
    expect(final.stop_reason == want["stop_reason"], f"{final.stop_reason}")
    expect(final.stop_sequence is None, f"{final.stop_sequence}")
    # input_tokens comes from message_delta: message_start said 0.
    expect(final.usage.input_tokens == want["input_tokens"], f"{final.usage}")
    expect(final.usage.output_tokens == want["output_tokens"], f"{final.usage}")


@check
def an_error_event_mid_stream_raises_with_its_type_after_the_text_before_it(
    client: anthropic.Anthropic,
) -> None:
    want = FIXTURES["stream_error"]
    got: List[str] = []
    try:
        with client.messages.stream(
            model="stream_error", max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
        ) as stream:
            for text in stream.text_stream:
                got.append(text)
    except anthropic.APIStatusError as e:
        expect(e.type == want["type"], f"type {e.type}")
        expect(e.api_message == want["message"], f"message {e.api_message!r}")
    else:
        raise AssertionError("the error event raised nothing")
    expect(got == [want["text_before"]], f"text before the error {got}")


@check
def a_whole_answer_parses_as_a_message(client: anthropic.Anthropic) -> None:
    want = FIXTURES["message"]
    message = ask(client, "message")
    expect(isinstance(message, Message), f"{type(message)}")
    expect(message.type == "message" and message.role == "assistant", f"{message}")
    expect(message.id == want["id"] and message.model == want["model"], f"{message}")
    expect([b.text for b in message.content] == [want["text"]], f"{message.content}")
    expect(message.stop_reason == want["stop_reason"], f"{message.stop_reason}")
    expect(message.usage.input_tokens == want["input_tokens"], f"{message.usage}")
    expect(message.usage.output_tokens == want["output_tokens"], f"{message.usage}")


@check
def every_error_status_raises_the_sdks_exception_for_it(client: anthropic.Anthropic) -> None:
    for case in FIXTURES["errors"]:
        try:
            ask(client, case["model"])
        except anthropic.APIStatusError as e:
            cls = EXCEPTION_FOR_STATUS[case["status"]]
            where = f"{case['model']}: {type(e).__name__}"
            expect(type(e) is cls, f"{where}, expected {cls.__name__}")
            expect(e.status_code == case["status"], f"{where} status {e.status_code}")
            expect(e.type == case["type"], f"{where} type {e.type}")
            expect(e.api_message == case["message"], f"{where} message {e.api_message!r}")
        else:
            raise AssertionError(f"{case['model']} raised nothing")


def main() -> int:
    fixtures_path, requests_path = sys.argv[1], sys.argv[2]
    with open(fixtures_path, encoding="utf-8") as f:
        FIXTURES.update(json.load(f))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Replies)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = anthropic.Anthropic(
        api_key="not-a-provd-token",
        base_url=f"http://127.0.0.1:{server.server_address[1]}",
        max_retries=0,
        timeout=10.0,
    )
    passed = failed = 0
    for fn in CHECKS:
        try:
            fn(client)
        except Exception:  # noqa: BLE001 (every failure is reported, then the next runs)
            failed += 1
            print(f"FAIL {fn.__name__}: {traceback.format_exc()}")
        else:
            passed += 1
            print(f"PASS {fn.__name__}")
    server.shutdown()
    with open(requests_path, "w", encoding="utf-8") as f:
        json.dump(RECEIVED, f)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
