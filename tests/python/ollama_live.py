#!/usr/bin/env python3
"""The official ``ollama`` Python client against provd's live Ollama routes.

    $PROVD_PYTHON tests/python/ollama_live.py --socket DIR/http.sock --model p/test-model

Run by tests/tests/http_clients.rs against a daemon whose provider is the faithful
OpenAI mock upstream of tests/ (see anthropic_live.py for what it answers), with the
models ``gpt-a`` listed. ``ollama.Client`` passes its keyword arguments to httpx, so an
``httpx.HTTPTransport(uds=...)`` carries it over the socket.

After closing its stream in the cancel test the script prints
``CLOSED cancel_by_closing_the_stream`` and waits for a line on stdin. One line per test
(``PASS name`` or ``FAIL name: reason``), then ``N passed, M failed``; exit 0 only when
nothing failed.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

from live_runner import check, run  # noqa: E402  (beside this script)

import httpx  # noqa: E402  (the ollama client's own HTTP library)
import ollama  # noqa: E402

TIMEOUT_S = 30.0


def client(socket: str) -> ollama.Client:
    return ollama.Client(host="http://provd", transport=httpx.HTTPTransport(uds=socket), timeout=TIMEOUT_S)


def chat_not_streamed(c: ollama.Client, model: str) -> None:
    r = c.chat(model=model, messages=[{"role": "user", "content": "hi"}], stream=False)
    check(r.message.role == "assistant", f"role {r.message.role}")
    check(r.message.content == "Hello, SDK", f"text {r.message.content!r}")
    check(r.done and r.done_reason == "stop", f"done {r.done} {r.done_reason}")
    check((r.prompt_eval_count, r.eval_count) == (5, 3), f"counts {r.prompt_eval_count} {r.eval_count}")
    check(r.model == model, f"model {r.model}")


def chat_streamed(c: ollama.Client, model: str) -> None:
    parts = list(c.chat(model=model, messages=[{"role": "user", "content": "hi"}], stream=True))
    text = "".join(p.message.content or "" for p in parts)
    check(text == "Hello, SDK", f"text {text!r}")
    check(all(not p.done for p in parts[:-1]) and parts[-1].done, f"done flags {[p.done for p in parts]}")
    last = parts[-1]
    check(last.done_reason == "stop", f"done_reason {last.done_reason}")
    check((last.prompt_eval_count, last.eval_count) == (5, 3), f"counts {last.prompt_eval_count} {last.eval_count}")


def generate(c: ollama.Client, model: str) -> None:
    r = c.generate(model=model, prompt="hi", stream=False)
    check(r.response == "Hello, SDK" and r.done, f"{r.response!r} {r.done}")
    text = "".join(p.response for p in c.generate(model=model, prompt="hi", stream=True))
    check(text == "Hello, SDK", f"streamed {text!r}")


def tags(c: ollama.Client, model: str) -> None:
    names = [m.model for m in c.list().models]
    check("p/gpt-a" in names, f"names {names}")


def errors(c: ollama.Client, model: str) -> None:
    try:
        c.chat(model="nope/x", messages=[{"role": "user", "content": "hi"}], stream=False)
    except ollama.ResponseError as e:
        check(e.status_code == 404 and "nope" in e.error, f"{e.status_code} {e.error}")
    else:
        raise AssertionError("an unknown provider was accepted")
    try:
        c.chat(model=model, messages=[{"role": "user", "content": "fail"}], stream=False)
    except ollama.ResponseError as e:
        check(e.status_code == 429 and "slow down" in e.error, f"{e.status_code} {e.error}")
    else:
        raise AssertionError("the upstream's 429 raised nothing")


def cancel_by_closing_the_stream(c: ollama.Client, model: str) -> None:
    stream = c.chat(model=model, messages=[{"role": "user", "content": "hold"}], stream=True)
    first = next(stream)
    check(first.message.content == "first", f"first {first.message.content!r}")
    stream.close()  # leaves the client's `with stream(...)`, closing the response
    print("CLOSED cancel_by_closing_the_stream", flush=True)
    answer = sys.stdin.readline().strip()
    check(answer == "upstream closed", f"the test answered {answer!r}")


TESTS = [chat_not_streamed, chat_streamed, generate, tags, errors, cancel_by_closing_the_stream]


if __name__ == "__main__":
    sys.exit(run(__doc__.splitlines()[0], client, TESTS))
