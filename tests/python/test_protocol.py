#!/usr/bin/env python3
"""End-to-end protocol tests for provd, against a daemon that is already running.

    provd serve --socket /tmp/x/provd.sock          # no --config: the embedded mock
    target/python-venv/bin/python tests/python/test_protocol.py --socket /tmp/x/provd.sock

Any Python 3 with msgpack runs it; scripts/test makes ``target/python-venv`` with the
suite's pinned packages (``tests/python/requirements.txt``).

The script prints one line per test (``PASS name`` or ``FAIL name: reason``), then a single
summary line ``N passed, M failed``. It exits 0 only when nothing failed.

Most tests drive provd_client.py. Tests of protocol violations (malformed bytes,
oversized frames, requests before the hello) use a raw socket, because a correct client
cannot produce those frames. The expectations come from client/PROTOCOL.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import tempfile
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

import provd_client as pc  # noqa: E402

SOCKET_PATH = ""
# Every wait in these tests is bounded, so a daemon that hangs fails a test instead of
# hanging the run.
TIMEOUT_S = 10.0

TESTS: List[Callable[[], None]] = []


def test(fn: Callable[[], None]) -> Callable[[], None]:
    TESTS.append(fn)
    return fn


class Failure(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failure(what)


def eq(actual: Any, expected: Any, what: str) -> None:
    if actual != expected:
        raise Failure(f"{what}: expected {expected!r}, got {actual!r}")


def expect_error(fn: Callable[[], Any], code: str) -> pc.ProvdError:
    try:
        result = fn()
    except pc.ProvdError as e:
        eq(e.code, code, f"error code (message: {e.message!r})")
        return e
    raise Failure(f"expected a {code} error, got result {result!r}")


def client() -> pc.Client:
    return pc.connect(SOCKET_PATH, client_name="test_protocol.py", timeout=TIMEOUT_S)


def mock(**options: Any) -> Dict[str, Any]:
    return {"mock": options}


# --------------------------------------------------------------------------- raw socket


class Raw:
    """A bare connection: frames in, decoded envelopes out, no routing and no checks."""

    def __init__(self, hello: bool = True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT_S)
        self.sock.connect(SOCKET_PATH)
        if hello:
            self.send([0, 0, "hello", {"protocol_version": pc.PROTOCOL_VERSION, "client": "raw"}])
            reply = self.recv()
            check(reply is not None and reply[:3] == [1, 0, None], f"hello failed: {reply!r}")
            self.hello_result = reply[3]

    def send(self, value: Any) -> None:
        self.sock.sendall(pc.pack_frame(value))

    def send_payload(self, payload: bytes) -> None:
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> Optional[Any]:
        """The next envelope, or None once the daemon has closed the connection."""
        try:
            payload = pc.read_frame(self.sock)
        except ConnectionResetError:
            return None
        return None if payload is None else pc.unpack(payload)

    def recv_until_reply(self, req_id: int) -> List[Any]:
        """Every envelope up to and including the reply with ``req_id``."""
        seen = []
        while True:
            env = self.recv()
            check(env is not None, f"connection closed before the reply to {req_id}; got {seen!r}")
            seen.append(env)
            if env[0] == pc.REPLY and env[1] == req_id:
                return seen

    def expect_closed(self) -> None:
        env = self.recv()
        check(env is None, f"expected the daemon to close the connection, got {env!r}")

    def ping_works(self, req_id: int = 900) -> None:
        self.send([0, req_id, "ping", {}])
        frames = self.recv_until_reply(req_id)
        eq(frames[-1], [1, req_id, None, {}], "ping reply")

    def close(self) -> None:
        self.sock.close()


def expect_error_notification(raw: Raw, code: str) -> Dict[str, Any]:
    env = raw.recv()
    check(env is not None, "connection closed without an error notification")
    check(env[0] == pc.NOTIFICATION and env[1] == "error", f"expected an error notification, got {env!r}")
    eq(env[2]["code"], code, "notification code")
    check(isinstance(env[2]["message"], str) and env[2]["message"], "notification message")
    return env[2]


def expect_reply_error(env: Any, req_id: int, code: str) -> Dict[str, Any]:
    check(env is not None, f"connection closed, expected a reply to {req_id}")
    check(env[0] == pc.REPLY and env[1] == req_id, f"expected a reply with id {req_id}, got {env!r}")
    check(env[3] is None, f"an error reply has result nil, got {env[3]!r}")
    check(isinstance(env[2], dict), f"expected an error map, got {env[2]!r}")
    eq(env[2]["code"], code, f"error code (message: {env[2].get('message')!r})")
    return env[2]


# --------------------------------------------------------------------------- hello, unary


@test
def hello_result_fields() -> None:
    with client() as c:
        r = c.hello_result
        eq(r["protocol_version"], 1, "protocol_version")
        check(isinstance(r["daemon_version"], str) and r["daemon_version"], "daemon_version is a non-empty string")
        eq(r["max_frame_bytes"], 4 * 1024 * 1024, "max_frame_bytes (default)")
        eq(r["max_streams"], 64, "max_streams (default)")
        eq(set(r) >= {"protocol_version", "daemon_version", "max_frame_bytes", "max_streams"}, True, "fields")
    # The hello may use any id; the reply echoes it.
    raw = Raw(hello=False)
    raw.send([0, 42, "hello", {"protocol_version": 1}])  # client is optional
    env = raw.recv()
    check(env is not None and env[:3] == [1, 42, None], f"hello reply with id 42, got {env!r}")
    raw.close()


@test
def ping() -> None:
    with client() as c:
        eq(c.ping(), {}, "ping result")
    raw = Raw()
    raw.send([0, 7, "ping", {}])
    eq(raw.recv(), [1, 7, None, {}], "raw ping reply")
    raw.close()


@test
def list_providers_has_mock_as_default() -> None:
    with client() as c:
        providers = c.list_providers()
    eq(len(providers), 1, "one provider in the embedded config")
    p = providers[0]
    eq(p["id"], "mock", "id")
    eq(p["type"], "mock", "type")
    eq(p["default_model"], "mock-1", "default_model")
    eq(p["is_default"], True, "is_default")
    check("streaming" in p["capabilities"], f"capabilities include streaming: {p['capabilities']!r}")


@test
def list_models() -> None:
    with client() as c:
        every = c.list_models()
        eq(every["errors"], [], "errors")
        ids = [(m["id"], m["provider"]) for m in every["models"]]
        check(("mock-1", "mock") in ids, f"mock-1 listed: {ids!r}")
        one = c.list_models("mock")
        m = one["models"][0]
        eq((m["id"], m["provider"]), ("mock-1", "mock"), "model")
        check("display_name" in m and "context_window" in m and "created_at" in m, f"all fields present: {m!r}")
        expect_error(lambda: c.list_models("no-such-provider"), "not_found")


@test
def status_fields() -> None:
    with client() as c:
        c.generate_text("warm up", additional_params=mock(text="a b", chunks=2))
        s = c.status()
    for key, kind in [
        ("daemon_version", str), ("protocol_version", int), ("pid", int), ("uptime_ms", int),
        ("connections", int), ("active_streams", int), ("providers", list), ("instances", list),
    ]:
        check(isinstance(s.get(key), kind), f"status.{key} is {kind.__name__}: {s.get(key)!r}")
    eq(s["protocol_version"], 1, "protocol_version")
    check(s["pid"] > 0, "pid > 0")
    check(s["connections"] >= 1, f"connections counts this one: {s['connections']}")
    eq([p["id"] for p in s["providers"]], ["mock"], "providers")
    inst = [i for i in s["instances"] if i["provider"] == "mock" and i["model"] == "mock-1"]
    check(inst, f"the mock instance is listed after use: {s['instances']!r}")
    eq(inst[0]["status"], "ready", "instance status")
    eq(inst[0]["type"], "mock", "instance type")
    metrics = inst[0]["metrics"]
    for key in ["requests", "errors", "cancelled", "active", "chunks", "prompt_tokens", "completion_tokens"]:
        check(isinstance(metrics.get(key), int), f"metrics.{key} is an int: {metrics!r}")
    check(metrics["requests"] >= 1, "requests counts the warm-up")


# --------------------------------------------------------------------------- generate


@test
def streamed_generation_chunks_in_order() -> None:
    text = "The quick brown fox jumps over the lazy dog"
    with client() as c:
        gen = c.generate("four words of prompt", additional_params=mock(text=text, chunks=5))
        events = list(gen)
    chunks, done = events[:-1], events[-1]
    check(all(isinstance(e, pc.Chunk) for e in chunks), "every event before the last is a chunk")
    check(isinstance(done, pc.Done), f"the last event is Done, got {done!r}")
    eq([ch.index for ch in chunks], list(range(5)), "chunk indexes")
    eq({ch.id for ch in chunks}, {gen.id}, "chunk ids are the request id")
    eq("".join(ch.text for ch in chunks), text, "concatenated chunks")
    check(all(ch.model == "mock-1" and ch.created_at > 0 for ch in chunks), "chunk model and created_at")
    eq(done.chunks, 5, "done.chunks")
    eq(done.finish_reason, "stop", "finish_reason")
    eq(done.usage, {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}, "usage")
    eq((done.provider, done.model), ("mock", "mock-1"), "provider, model")
    eq(done.text, None, "done.text is nil when streaming")
    eq(done.raw.get("done"), True, "done: true")


@test
def non_streamed_generation_sends_no_chunks() -> None:
    text = "all at once, please"
    raw = Raw()
    raw.send([0, 11, "generate", {"prompt": "x", "stream": False, "additional_params": mock(text=text, chunks=4)}])
    frames = raw.recv_until_reply(11)
    eq(len(frames), 1, f"only the terminal reply, no chunk notifications: {frames!r}")
    env = frames[0]
    eq(env[2], None, "no error")
    done = env[3]
    eq(done["text"], text, "done.text")
    eq(done["chunks"], 0, "done.chunks")
    eq(done["usage"]["completion_tokens"], 4, "completion_tokens")
    eq(done["finish_reason"], "stop", "finish_reason")
    raw.close()
    # The same through the client.
    with client() as c:
        events = list(c.generate("x", stream=False, additional_params=mock(text=text, chunks=4)))
    eq(len(events), 1, "only Done")
    eq(events[0].text, text, "Done.text")


@test
def three_concurrent_generations_on_one_connection() -> None:
    with client() as c:
        gens = [
            c.generate(f"gen {n}", additional_params=mock(numbered=True, chunks=6, chunk_delay_ms=20))
            for n in range(3)
        ]
        eq(len({g.id for g in gens}), 3, "distinct ids")
        # Read them round-robin on one thread; routing by id keeps them apart.
        results: Dict[int, List[Any]] = {g.id: [] for g in gens}
        live = list(gens)
        while live:
            for g in list(live):
                event = next(g)
                results[g.id].append(event)
                if isinstance(event, pc.Done):
                    live.remove(g)
    for g in gens:
        events = results[g.id]
        chunks, done = events[:-1], events[-1]
        eq([ch.index for ch in chunks], list(range(6)), f"generation {g.id} indexes")
        eq("".join(ch.text for ch in chunks), "0 1 2 3 4 5 ", f"generation {g.id} text")
        eq(done.chunks, 6, f"generation {g.id} done.chunks")
    # They really ran at once: every generation's first chunk arrived before any of them
    # finished (the first chunk is immediate, the next five take 100 ms).
    first_chunks = max(results[g.id][0].seq for g in gens)
    first_done = min(results[g.id][-1].seq for g in gens)
    check(first_chunks < first_done, "the generations were interleaved, not run one after another")


@test
def cancel_running_generation() -> None:
    with client() as c:
        gen = c.generate("x", additional_params=mock(numbered=True, chunks=200, chunk_delay_ms=50))
        received = []
        first = next(gen)
        check(isinstance(first, pc.Chunk), f"first event is a chunk: {first!r}")
        received.append(first)
        gen.cancel()
        err = None
        try:
            for event in gen:
                check(isinstance(event, pc.Chunk), f"no Done after a cancel: {event!r}")
                received.append(event)
        except pc.ProvdError as e:
            err = e
        check(err is not None, "the generation ended with an error")
        eq(err.code, "cancelled", f"terminal code (message {err.message!r})")
        eq(err.retryable, False, "retryable")
        eq(err.chunks, len(received), "error.chunks = chunks received")
        check(err.chunks < 200, "cancelled before the end")
        check(isinstance(err.usage, dict) and "prompt_tokens" in err.usage, f"usage carried: {err.usage!r}")
        # It is no longer running, so a second cancel finds nothing.
        expect_error(lambda: c.cancel(gen.id), "not_found")
        eq(c.ping(), {}, "connection still works")


@test
def cancel_unknown_id_is_not_found() -> None:
    with client() as c:
        e = expect_error(lambda: c.cancel(987654), "not_found")
        check("987654" in e.message, f"message names the id: {e.message!r}")
    raw = Raw()
    raw.send([0, 12, "cancel", {"id": 4242}])
    expect_reply_error(raw.recv(), 12, "not_found")
    raw.close()


@test
def unknown_method_is_invalid_request_with_same_id() -> None:
    raw = Raw()
    raw.send([0, 31, "frobnicate", {}])
    err = expect_reply_error(raw.recv(), 31, "invalid_request")
    check("frobnicate" in err["message"], f"message names the method: {err['message']!r}")
    raw.ping_works()
    raw.close()
    with client() as c:
        expect_error(lambda: c.request("frobnicate", {}), "invalid_request")


@test
def wrong_param_types_are_invalid_request_and_connection_survives() -> None:
    raw = Raw()
    raw.send([0, 32, "generate", {"prompt": 5}])
    err = expect_reply_error(raw.recv(), 32, "invalid_request")
    check("generate params" in err["message"], f"message names the method: {err['message']!r}")
    raw.send([0, 33, "cancel", {"id": "five"}])
    expect_reply_error(raw.recv(), 33, "invalid_request")
    raw.send([0, 34, "generate", {"prompt": "x", "max_tokens": -1}])
    expect_reply_error(raw.recv(), 34, "invalid_request")
    raw.send([0, 35, "generate", {"prompt": "x", "messages": [{"role": "robot", "content": "x"}]}])
    expect_reply_error(raw.recv(), 35, "invalid_request")
    raw.send([0, 36, "generate", {"system": "no prompt, no messages"}])
    expect_reply_error(raw.recv(), 36, "invalid_request")
    raw.ping_works()
    raw.close()


@test
def malformed_msgpack_gets_error_notification_and_connection_survives() -> None:
    raw = Raw()
    raw.send_payload(b"\xc1")  # reserved marker
    expect_error_notification(raw, "protocol_error")
    raw.ping_works(901)
    raw.send_payload(b"\xc0\xc0")  # two values in one frame
    expect_error_notification(raw, "protocol_error")
    raw.send_payload(b"\xdd\xff\xff\xff\xff\xc0")  # array32 announcing 4 billion items
    expect_error_notification(raw, "protocol_error")
    raw.send_payload(b"\x91" * 40 + b"\xc0")  # nested deeper than 32 levels
    expect_error_notification(raw, "protocol_error")
    raw.send({"not": "an envelope"})
    expect_error_notification(raw, "protocol_error")
    raw.ping_works(902)
    raw.close()


@test
def empty_frame_gets_error_notification_and_connection_survives() -> None:
    raw = Raw()
    raw.send_bytes(b"\x00\x00\x00\x00")
    note = expect_error_notification(raw, "protocol_error")
    check("empty" in note["message"], f"message says empty: {note['message']!r}")
    raw.ping_works()
    raw.close()


@test
def client_sent_notification_is_refused_and_connection_survives() -> None:
    raw = Raw()
    raw.send([2, "chunk", {"id": 1}])
    expect_error_notification(raw, "protocol_error")
    raw.send([1, 5, None, {}])
    expect_error_notification(raw, "protocol_error")
    raw.ping_works()
    raw.close()


@test
def oversized_frame_gets_error_notification_then_close() -> None:
    raw = Raw()
    max_bytes = raw.hello_result["max_frame_bytes"]
    raw.send_bytes(struct.pack(">I", max_bytes + 1))  # the header alone; no payload follows
    note = expect_error_notification(raw, "protocol_error")
    check(str(max_bytes) in note["message"], f"message names the maximum: {note['message']!r}")
    raw.expect_closed()
    raw.close()


@test
def frame_of_exactly_max_frame_bytes_is_accepted() -> None:
    raw = Raw()
    max_bytes = raw.hello_result["max_frame_bytes"]
    pad_key = "padding"  # an unknown field: ignored
    skeleton = len(pc.pack([0, 50, "ping", {pad_key: ""}]))
    # A str32 header takes 5 bytes where an empty fixstr takes 1.
    payload = pc.pack([0, 50, "ping", {pad_key: "x" * (max_bytes - skeleton - 4)}])
    eq(len(payload), max_bytes, "payload size")
    raw.send_payload(payload)
    frames = raw.recv_until_reply(50)
    eq(frames[-1], [1, 50, None, {}], "ping reply")
    raw.close()


@test
def protocol_version_mismatch_names_both_versions_then_closes() -> None:
    raw = Raw(hello=False)
    raw.send([0, 0, "hello", {"protocol_version": 999, "client": "from the future"}])
    err = expect_reply_error(raw.recv(), 0, "protocol_error")
    check("999" in err["message"], f"message names the client's version: {err['message']!r}")
    check("version 1" in err["message"], f"message names the daemon's version: {err['message']!r}")
    raw.expect_closed()
    raw.close()
    # The client surfaces it as a ProvdError from connect.
    original = pc.PROTOCOL_VERSION
    pc.PROTOCOL_VERSION = 999
    try:
        expect_error(client, "protocol_error")
    finally:
        pc.PROTOCOL_VERSION = original


@test
def request_before_hello_is_refused_then_closed() -> None:
    raw = Raw(hello=False)
    raw.send([0, 3, "ping", {}])
    err = expect_reply_error(raw.recv(), 3, "protocol_error")
    check("hello" in err["message"], f"message says hello comes first: {err['message']!r}")
    raw.expect_closed()
    raw.close()


@test
def second_hello_is_invalid_request() -> None:
    raw = Raw()
    raw.send([0, 60, "hello", {"protocol_version": 1}])
    expect_reply_error(raw.recv(), 60, "invalid_request")
    raw.ping_works()
    raw.close()


@test
def duplicate_running_id_is_invalid_request() -> None:
    raw = Raw()
    slow = {"prompt": "x", "additional_params": mock(numbered=True, chunks=4, chunk_delay_ms=300)}
    raw.send([0, 40, "generate", slow])
    first = raw.recv()
    check(first[:2] == [2, "chunk"] and first[2]["id"] == 40, f"first chunk of 40: {first!r}")
    raw.send([0, 40, "generate", {"prompt": "again"}])
    raw.send([0, 40, "ping", {}])
    # Both duplicates are refused with `error` notifications, never with a reply carrying
    # id 40, which would read as the end of the running generation (PROTOCOL.md section 10).
    for _ in range(2):
        refusal = raw.recv()
        check(refusal[:2] == [2, "error"], f"an error notification: {refusal!r}")
        eq(refusal[2]["code"], "invalid_request", "refusal code")
        check("request id 40" in refusal[2]["message"], f"message names the id: {refusal[2]['message']!r}")
    # The running generation is unharmed: its remaining chunks, then its done.
    rest = raw.recv_until_reply(40)
    eq([e[2]["index"] for e in rest[:-1]], [1, 2, 3], "remaining chunk indexes")
    eq(rest[-1][2], None, "the original generation succeeds")
    eq(rest[-1][3]["chunks"], 4, "done.chunks")
    # Its id is free again once it has ended.
    raw.send([0, 40, "generate", {"prompt": "x", "stream": False}])
    frames = raw.recv_until_reply(40)
    eq(frames[-1][2], None, "the id can be reused after the end")
    raw.close()


@test
def client_gives_a_duplicate_id_notice_to_the_refused_request() -> None:
    # The client (not a raw socket) sends a request with an id still running: the
    # daemon's `error` notice carrying that id refuses the new request, raised from its
    # call, while the running generation goes on to its own end.
    with client() as c:
        gen = c.generate("x", additional_params=mock(numbered=True, chunks=3, chunk_delay_ms=200), req_id=40)
        first = next(gen)
        eq(first.index, 0, "first chunk")
        err = expect_error(lambda: c.request("ping", {}, req_id=40), "invalid_request")
        check("request id 40" in err.message, f"the refusal names the id: {err.message!r}")
        rest = list(gen)
        eq([e.index for e in rest[:-1]], [1, 2], "the running generation's remaining chunks")
        check(isinstance(rest[-1], pc.Done), f"it ends with done: {rest[-1]!r}")
        eq(c.request("ping", {}, req_id=40), {}, "the id is free again")


@test
def mock_fault_mid_stream_ends_with_error_and_chunk_count() -> None:
    with client() as c:
        gen = c.generate("x", additional_params=mock(numbered=True, chunks=6, fault="mid_stream", fault_after_chunks=4))
        received = []
        try:
            for event in gen:
                check(isinstance(event, pc.Chunk), f"no Done after a fault: {event!r}")
                received.append(event)
            raise Failure("the generation did not fail")
        except pc.ProvdError as e:
            err = e
        eq(err.code, "upstream_error", "fault code")
        eq([ch.text for ch in received], ["0 ", "1 ", "2 ", "3 "], "chunks before the fault")
        eq(err.chunks, 4, "error.chunks")
        check(isinstance(err.usage, dict), f"usage carried: {err.usage!r}")
        # A retryable code is reported as retryable, with zero chunks before the first.
        gen = c.generate("x", additional_params=mock(fault="before_first_chunk", fault_code="rate_limited"))
        err = expect_error(lambda: list(gen), "rate_limited")
        eq(err.retryable, True, "rate_limited is retryable")
        eq(err.chunks, 0, "no chunks")
        eq(err.code_value, 5, "integer code")
        eq(c.ping(), {}, "connection still works")


@test
def max_tokens_cut_has_finish_reason_length() -> None:
    with client() as c:
        text, done = c.generate_text("x", max_tokens=3, additional_params=mock(numbered=True, chunks=10))
    eq(text, "0 1 2 ", "text cut after 3 chunks")
    eq(done.finish_reason, "length", "finish_reason")
    eq(done.chunks, 3, "done.chunks")
    eq(done.usage["completion_tokens"], 3, "completion_tokens")


@test
def usage_counts_system_messages_and_prompt() -> None:
    with client() as c:
        _, done = c.generate_text(
            "three more words",
            system="be brief",
            messages=[{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi"}],
            additional_params=mock(text="ok", chunks=1),
        )
    eq(done.usage, {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}, "usage")


@test
def unknown_provider_ends_generation_with_not_found() -> None:
    with client() as c:
        e = expect_error(lambda: c.generate_text("x", provider="no-such-provider"), "not_found")
        check("no-such-provider" in e.message, f"message names it: {e.message!r}")


WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@test
def tool_round_trip_streams_the_call_in_pieces_then_answers_from_the_result() -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    with client() as c:
        events = list(c.generate(messages=ask, tools=[WEATHER]))
        chunks, done = events[:-1], events[-1]
        pieces = [ch.tool_call for ch in chunks]
        check(len(pieces) >= 2 and all(p is not None for p in pieces), f"tool-call pieces: {chunks!r}")
        check(all(ch.text == "" for ch in chunks), "a tool-call chunk has no text")
        eq((pieces[0].get("id"), pieces[0].get("name")), ("mock_call_0", "get_weather"), "first piece")
        check(all("id" not in p and "name" not in p for p in pieces[1:]), "later pieces: arguments only")
        eq(done.finish_reason, "tool_calls", "finish_reason")
        eq(len(done.tool_calls), 1, "one call")
        call = done.tool_calls[0]
        eq(call["arguments"], "".join(p["arguments"] for p in pieces), "assembled = joined pieces")
        eq(json.loads(call["arguments"]), {"city": "mock"}, "the least arguments of the schema")

        turns = ask + [done.assistant_turn(), {"role": "tool", "content": "18 degrees and sunny", "tool_call_id": call["id"]}]
        text, done = c.generate(messages=turns, tools=[WEATHER]).collect()
        eq(text, "The tool get_weather returned: 18 degrees and sunny", "the answer")
        eq((done.finish_reason, done.tool_calls), ("stop", []), "a text answer")


@test
def a_request_without_tools_or_reasoning_sees_no_new_fields() -> None:
    with client() as c:
        events = list(c.generate("hello"))
    chunks, done = events[:-1], events[-1]
    check(all(ch.tool_call is None and ch.reasoning is None for ch in chunks), "no new chunk kinds")
    for key in ("tool_calls", "reasoning", "provider_state"):
        check(key not in done.raw, f"{key} is left out of the result")
    check("reasoning_tokens" not in done.usage, "no reasoning_tokens")


@test
def json_schema_reasoning_and_images_follow_the_protocol_document() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    with client() as c:
        text, _ = c.generate(
            "Describe Paris",
            response_format={"type": "json_schema", "name": "city", "schema": schema, "strict": True},
            stream=False,
        ).collect()
        eq(json.loads(text), {"name": "mock"}, "the least instance of the schema")

        events = list(c.generate("why is the sky blue", reasoning={"show": True, "effort": "low"}))
        reasoning = "".join(e.reasoning or "" for e in events[:-1])
        eq(reasoning, "Thinking about: why is the sky blue", "reasoning pieces")
        done = events[-1]
        eq(done.usage.get("reasoning_tokens"), 7, "reasoning_tokens")
        check(done.usage["completion_tokens"] > 7, "completion includes reasoning")
        eq(done.provider_state["type"], "mock", "provider_state is tagged with the provider type")
        text, _ = c.generate(
            "and at sunset?",
            messages=[{"role": "user", "content": "why is the sky blue"}, done.assistant_turn("Because.")],
        ).collect()
        check(text != "", "the turn with its provider state is accepted")

        image = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
        text, _ = c.generate(messages=[{"role": "user", "content": "What is this?", "images": [image]}]).collect()
        check(text.startswith("I see 1 image. "), f"image answer: {text!r}")
        err = expect_error(lambda: c.generate("hi", tools=[WEATHER, WEATHER]).collect(), "invalid_request")
        check("given twice" in err.message, f"the refusal names the problem: {err.message!r}")


@test
def unknown_fields_are_ignored() -> None:
    raw = Raw(hello=False)
    raw.send([0, 0, "hello", {"protocol_version": 1, "client": "t", "capabilities_from_2030": [1, 2]}])
    env = raw.recv()
    check(env[:3] == [1, 0, None], f"hello with an extra field: {env!r}")
    raw.send([0, 1, "generate", {"prompt": "x", "stream": False, "some_future_field": {"a": 1}}])
    frames = raw.recv_until_reply(1)
    eq(frames[-1][2], None, "generate with an extra field succeeds")
    raw.close()


@test
def disconnect_cancels_running_generations() -> None:
    def cancelled_count(c: pc.Client) -> int:
        for inst in c.status()["instances"]:
            if inst["provider"] == "mock" and inst["model"] == "mock-1":
                return inst["metrics"]["cancelled"]
        return 0

    with client() as observer:
        before = cancelled_count(observer)
        doomed = client()
        gens = [doomed.generate("x", additional_params=mock(numbered=True, chunks=500, chunk_delay_ms=100)) for _ in range(2)]
        for g in gens:
            check(isinstance(next(g), pc.Chunk), "running")
        doomed.close()
        # Poll the daemon's own counters; the cancellation is asynchronous.
        deadline = time.monotonic() + TIMEOUT_S
        while cancelled_count(observer) < before + 2:
            check(time.monotonic() < deadline, "the disconnect did not cancel both generations")
            time.sleep(0.02)


@test
def max_streams_per_connection_is_enforced() -> None:
    raw = Raw()
    limit = raw.hello_result["max_streams"]
    slow = {"prompt": "x", "additional_params": mock(numbered=True, chunks=2, chunk_delay_ms=60000)}
    for i in range(limit):
        raw.send([0, 1000 + i, "generate", slow])
    raw.send([0, 5000, "generate", slow])
    frames = raw.recv_until_reply(5000)
    replies = [f for f in frames if f[0] == pc.REPLY]
    eq(len(replies), 1, f"only the extra request is answered: {replies!r}")
    err = expect_reply_error(replies[0], 5000, "overloaded")
    eq(err["retryable"], True, "overloaded is retryable")
    raw.close()  # which also cancels the running ones


@test
def a_daemon_in_a_directory_others_can_write_gets_not_one_byte() -> None:
    # PROTOCOL.md section 2.4, step 2: anyone could have put this socket there.
    with tempfile.TemporaryDirectory(prefix="provd-py-squat-") as base:
        shared = os.path.join(base, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o777)
        path = os.path.join(shared, "provd.sock")
        impostor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        impostor.bind(path)
        impostor.listen(1)
        impostor.settimeout(TIMEOUT_S)
        try:
            pc.connect(path, timeout=TIMEOUT_S)
        except pc.UntrustedDaemon as e:
            check("nothing was sent" in e.message and shared in e.message, e.message)
            eq(e.code, "permission_denied", "the error's code")
        else:
            raise Failure("the client talked to a socket in a directory anyone can write")
        # It never even connected, so the impostor has nothing to accept.
        impostor.setblocking(False)
        try:
            impostor.accept()
            raise Failure("the client connected to the impostor")
        except BlockingIOError:
            pass
        impostor.close()


@test
def a_link_to_the_daemon_s_socket_is_followed_and_checked() -> None:
    with tempfile.TemporaryDirectory(prefix="provd-py-link-") as base:
        link = os.path.join(base, "provd.sock")
        os.symlink(SOCKET_PATH, link)
        with pc.connect(link, client_name="test_protocol.py", timeout=TIMEOUT_S) as c:
            c.ping()


# --------------------------------------------------------------------------- runner


def main() -> int:
    global SOCKET_PATH
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default=None, help="the daemon's socket (default: as in PROTOCOL.md 2.1)")
    parser.add_argument("-k", dest="only", default=None, help="run only tests whose name contains this")
    parser.add_argument("-v", dest="verbose", action="store_true", help="print tracebacks of failures")
    args = parser.parse_args()
    SOCKET_PATH = args.socket or pc.default_socket_path()

    passed = failed = 0
    for fn in TESTS:
        name = fn.__name__
        if args.only and args.only not in name:
            continue
        try:
            fn()
        except Exception as e:  # a failing test must not stop the others
            failed += 1
            reason = str(e) if isinstance(e, Failure) else f"{type(e).__name__}: {e}"
            print(f"FAIL {name}: {reason}", flush=True)
            if args.verbose:
                traceback.print_exc()
        else:
            passed += 1
            print(f"PASS {name}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
