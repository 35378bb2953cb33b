#!/usr/bin/env python3
"""The official ``anthropic`` Python SDK against provd's live ``/v1/messages`` route.

    $PROVD_PYTHON tests/python/anthropic_live.py --socket DIR/http.sock --model p/test-model
    ANTHROPIC_BASE_URL=http://127.0.0.1:PORT ANTHROPIC_API_KEY=<provd token> \
        $PROVD_PYTHON tests/python/anthropic_live.py --model p/test-model

Run by tests/tests/http_clients.rs against a daemon whose provider is the faithful
OpenAI mock upstream of tests/: it answers "Hello, SDK" (5 prompt and 3 completion
tokens), a 429 to the prompt "fail", and one chunk then silence to the prompt "hold";
the daemon has no default provider, so a model "nope/x" names an unknown provider. On the
Unix socket the SDK talks through an httpx transport with ``uds=``; over loopback TCP it
reads its base URL and key (a provd token) from the environment.

After closing its stream in the cancel test the script prints
``CLOSED cancel_by_closing_the_stream`` and waits for a line on stdin: the Rust test
answers once the upstream saw its request closed. One line per test (``PASS name`` or
``FAIL name: reason``), then ``N passed, M failed``; exit 0 only when nothing failed.
"""

from __future__ import annotations

import sys
from typing import Optional

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

from live_runner import check, run  # noqa: E402  (beside this script)

import anthropic  # noqa: E402

try:  # the SDK's HTTP client: httpx2 in recent releases, httpx before
    import httpx2 as httpx  # noqa: E402
except ImportError:  # pragma: no cover
    import httpx  # noqa: E402

TIMEOUT_S = 30.0


def client(socket: Optional[str]) -> anthropic.Anthropic:
    if socket is None:
        # Loopback TCP: ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY (a provd token) come from the environment,
        # exactly as a tool pointed at provd gets them; nothing else is configured here.
        return anthropic.Anthropic(timeout=TIMEOUT_S, max_retries=0)
    return anthropic.Anthropic(
        api_key="sk-ant-placeholder",
        base_url="http://provd",
        http_client=httpx.Client(transport=httpx.HTTPTransport(uds=socket), timeout=TIMEOUT_S),
        # The test asserts the first answer; the SDK's own retries would hide it.
        max_retries=0,
    )


def not_streamed(c: anthropic.Anthropic, model: str) -> None:
    m = c.messages.create(model=model, max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    check(m.type == "message" and m.role == "assistant", f"type {m.type} role {m.role}")
    check([b.type for b in m.content] == ["text"], f"content {m.content}")
    check(m.content[0].text == "Hello, SDK", f"text {m.content[0].text!r}")
    check(m.stop_reason == "end_turn", f"stop_reason {m.stop_reason}")
    check((m.usage.input_tokens, m.usage.output_tokens) == (5, 3), f"usage {m.usage}")
    # The Messages API names the model that answered: the one the upstream named.
    check(m.model == "test-model", f"model {m.model}")


def streamed(c: anthropic.Anthropic, model: str) -> None:
    with c.messages.stream(model=model, max_tokens=20, messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    check(text == "Hello, SDK", f"text {text!r}")
    check(final.content[0].text == "Hello, SDK", f"final {final.content}")
    check(final.stop_reason == "end_turn", f"stop_reason {final.stop_reason}")
    check((final.usage.input_tokens, final.usage.output_tokens) == (5, 3), f"usage {final.usage}")


def errors(c: anthropic.Anthropic, model: str) -> None:
    try:
        c.messages.create(model=model, max_tokens=20, messages=[{"role": "user", "content": "fail"}])
    except anthropic.RateLimitError as e:
        check(e.status_code == 429, f"status {e.status_code}")
        check(isinstance(e.body, dict) and e.body.get("error", {}).get("type") == "rate_limit_error", f"body {e.body}")
    else:
        raise AssertionError("the upstream's 429 raised nothing")
    try:
        c.messages.create(model="nope/x", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    except anthropic.NotFoundError as e:
        check(e.status_code == 404 and "nope" in str(e), f"{e.status_code} {e}")
    else:
        raise AssertionError("an unknown provider was accepted")
    try:
        c.messages.create(
            model=model,
            max_tokens=20,
            messages=[{"role": "user", "content": "hi"}],
            # A server tool runs on Anthropic's side: provd refuses it by name.
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    except anthropic.BadRequestError as e:
        check(e.status_code == 400 and "tools" in str(e), f"{e.status_code} {e}")
        check(isinstance(e.body, dict) and e.body.get("error", {}).get("type") == "invalid_request_error", f"body {e.body}")
    else:
        raise AssertionError("a server tool was accepted")


def cancel_by_closing_the_stream(c: anthropic.Anthropic, model: str) -> None:
    stream = c.messages.create(
        model=model, max_tokens=20, messages=[{"role": "user", "content": "hold"}], stream=True
    )
    seen = False
    for event in stream:
        if event.type == "content_block_delta" and event.delta.text == "first":
            seen = True
            break
    check(seen, "the first text never came")
    stream.close()
    print("CLOSED cancel_by_closing_the_stream", flush=True)
    answer = sys.stdin.readline().strip()
    check(answer == "upstream closed", f"the test answered {answer!r}")


def models(c: anthropic.Anthropic, model: str) -> None:
    # One model a page, so the SDK's auto-pagination walks every page by after_id.
    listed = list(c.models.list(limit=1))
    ids = [m.id for m in listed]
    check(any(i.startswith("p/") for i in ids), f"ids {ids}")
    check(len(ids) == len(set(ids)), f"a model twice: {ids}")
    check(all(m.type == "model" and m.created_at is not None for m in listed), f"{listed}")


TESTS = [not_streamed, streamed, errors, cancel_by_closing_the_stream, models]


if __name__ == "__main__":
    sys.exit(run(__doc__.splitlines()[0], client, TESTS))
