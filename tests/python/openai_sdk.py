#!/usr/bin/env python3
"""The official ``openai`` Python SDK against provd's HTTP front door.

    target/python-venv/bin/python tests/python/openai_sdk.py --socket DIR/http.sock --model p/test-model
    OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 OPENAI_API_KEY=<provd token> \
        target/python-venv/bin/python tests/python/openai_sdk.py --model p/test-model

Run by tests/tests/http_clients.rs, over the Unix socket and over loopback TCP with a token, against a daemon whose provider is the faithful
OpenAI mock upstream of tests/: it answers "Hello, SDK" (5 prompt and 3 completion
tokens), a 429 to the prompt "fail", and one chunk then silence to the prompt "hold".
On the Unix socket the SDK talks through an httpx transport with ``uds=``, with a
placeholder key (provd ignores a key that is not one of its tokens).

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

import openai  # noqa: E402

try:  # the SDK's HTTP client: httpx2 in openai 3, httpx before
    import httpx2 as httpx  # noqa: E402
except ImportError:  # pragma: no cover
    import httpx  # noqa: E402

TIMEOUT_S = 30.0


def client(socket: Optional[str]) -> openai.OpenAI:
    if socket is None:
        # Loopback TCP: OPENAI_BASE_URL and OPENAI_API_KEY (a provd token) come from the environment,
        # exactly as a tool pointed at provd gets them; nothing else is configured here.
        return openai.OpenAI(timeout=TIMEOUT_S, max_retries=0)
    return openai.OpenAI(
        api_key="sk-placeholder",
        base_url="http://provd/v1",
        http_client=httpx.Client(transport=httpx.HTTPTransport(uds=socket), timeout=TIMEOUT_S),
        # The test asserts the first answer; the SDK's own retries would hide it.
        max_retries=0,
    )


def not_streamed(c: openai.OpenAI, model: str) -> None:
    r = c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        max_completion_tokens=20,
    )
    check(r.object == "chat.completion", f"object {r.object}")
    check(r.choices[0].message.content == "Hello, SDK", f"text {r.choices[0].message.content!r}")
    check(r.choices[0].finish_reason == "stop", f"finish {r.choices[0].finish_reason}")
    check(r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (5, 3, 8), f"usage {r.usage}")
    check(r.model == model, f"model {r.model}")


def streamed_with_usage(c: openai.OpenAI, model: str) -> None:
    stream = c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, roles = "", None, None, []
    for chunk in stream:
        check(chunk.object == "chat.completion.chunk", f"object {chunk.object}")
        if chunk.usage is not None:
            check(chunk.choices == [], "the usage chunk has no choices")
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    check(text == "Hello, SDK", f"text {text!r}")
    check(roles == ["assistant"], f"roles {roles}")
    check(finish == "stop", f"finish {finish}")
    check(usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (5, 3), f"usage {usage}")


def an_error(c: openai.OpenAI, model: str) -> None:
    try:
        c.chat.completions.create(model=model, messages=[{"role": "user", "content": "fail"}])
    except openai.RateLimitError as e:
        check(e.status_code == 429, f"status {e.status_code}")
        check(e.response.headers.get("retry-after") == "7", f"retry-after {e.response.headers.get('retry-after')}")
        check(isinstance(e.body, dict) and e.body.get("code") == "rate_limited", f"body {e.body}")
        check("slow down" in str(e), str(e))
    else:
        raise AssertionError("no error raised")
    try:
        c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], n=2)
    except openai.BadRequestError as e:
        check(e.status_code == 400 and isinstance(e.body, dict) and e.body.get("param") == "n", f"{e.status_code} {e.body}")
    else:
        raise AssertionError("n=2 accepted")


def cancel_by_closing_the_stream(c: openai.OpenAI, model: str) -> None:
    stream = c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hold"}], stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content == "first":
            break
    stream.close()
    print("CLOSED cancel_by_closing_the_stream", flush=True)
    answer = sys.stdin.readline().strip()
    check(answer == "upstream closed", f"the test answered {answer!r}")


def models(c: openai.OpenAI, model: str) -> None:
    ids = [m.id for m in c.models.list()]
    check(any(i.startswith("p/") for i in ids) and all("/" in i for i in ids), f"ids {ids}")


TESTS = [not_streamed, streamed_with_usage, an_error, cancel_by_closing_the_stream, models]


if __name__ == "__main__":
    sys.exit(run(__doc__.splitlines()[0], client, TESTS))
