"""The official `ollama` Python client reads provd's Ollama front door answers.

Run by tests/tests/ollama_client.rs:

    python ollama_client_check.py ANSWERS.json REQUESTS.json

ANSWERS.json holds the front door's encoded answers (status, content type, body), made
by provd's own encoder. The client is pointed at an httpx MockTransport that serves
them, so every answer goes through the client's own code (its NDJSON loop, its error
handling) and its pydantic types (ChatResponse, GenerateResponse, ListResponse). The
requests the client sent are written to REQUESTS.json for the Rust test to parse with
provd's request decoders. Prints one line per check and `N passed, M failed`.
"""

import datetime
import json
import sys

import httpx
import ollama

answers = json.load(open(sys.argv[1]))
requests = []


def serve(request: httpx.Request) -> httpx.Response:
    body = request.content.decode() if request.content else ""
    path = request.url.path
    requests.append({"method": request.method, "path": path, "body": body})
    if request.method == "GET" and path == "/api/tags":
        key = "tags"
    else:
        sent = json.loads(body)
        route = path.rsplit("/", 1)[-1]
        if sent["model"] in ("missing", "failing"):
            key = sent["model"]
        elif not sent.get("messages") and not sent.get("prompt"):
            key = f"{route}_preload"
        else:
            key = f"{route}_{'stream' if sent.get('stream', True) else 'whole'}"
    answer = answers[key]
    return httpx.Response(
        answer["status"],
        headers={"content-type": answer["content_type"]},
        content=answer["body"].encode(),
    )


client = ollama.Client(host="http://provd.invalid", transport=httpx.MockTransport(serve))
passed = failed = 0


def check(name, test):
    global passed, failed
    try:
        test()
    except Exception as e:  # noqa: BLE001 - every failure is reported by name
        failed += 1
        print(f"FAIL {name}: {type(e).__name__}: {e}")
    else:
        passed += 1
        print(f"ok   {name}")


def is_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo is not None


def chat_streamed():
    parts = list(
        client.chat(
            model="anthropic/claude",
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            stream=True,
            options={"temperature": 0.2, "num_predict": 64, "seed": 7, "stop": ["END"]},
            keep_alive="5m",
        )
    )
    assert all(isinstance(p, ollama.ChatResponse) for p in parts)
    assert "".join(p.message.content for p in parts) == answers["text"]
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    last = parts[-1]
    assert last.done_reason == "stop", last.done_reason
    assert last.prompt_eval_count == 12 and last.eval_count == 3
    assert last.total_duration > 0 and last.load_duration == 0
    assert all(p.message.role == "assistant" and is_time(p.created_at) for p in parts)


def chat_whole():
    r = client.chat(model="anthropic/claude", messages=[{"role": "user", "content": "Hi"}], stream=False)
    assert isinstance(r, ollama.ChatResponse)
    assert r.message.content == answers["text"] and r.done and r.eval_count == 3


def generate_streamed():
    parts = list(client.generate(model="ollama/llama3.2", prompt="Why?", system="Be brief.", stream=True))
    assert all(isinstance(p, ollama.GenerateResponse) for p in parts)
    assert "".join(p.response for p in parts) == answers["text"]
    assert parts[-1].done and parts[-1].context is None


def generate_whole():
    r = client.generate(model="ollama/llama3.2", prompt="Why?", stream=False, options={"top_k": 20})
    assert r.response == answers["text"] and r.done_reason == "length"


def preload():
    r = client.generate(model="ollama/llama3.2")
    assert r.done and r.done_reason == "load" and r.response == ""
    r = client.chat(model="ollama/llama3.2", messages=[])
    assert r.done and r.done_reason == "load"


def tags():
    listed = client.list()
    assert isinstance(listed, ollama.ListResponse)
    first = listed.models[0]
    assert first.model == "anthropic/claude-sonnet-4-5"
    assert first.modified_at == datetime.datetime(2025, 10, 17, 23, 14, 7, tzinfo=datetime.timezone.utc)
    assert first.size == 0 and len(first.digest) == 64
    assert first.details.families is None and first.details.format == ""


def not_found():
    try:
        client.chat(model="missing", messages=[{"role": "user", "content": "Hi"}], stream=False)
    except ollama.ResponseError as e:
        assert e.status_code == 404 and e.error == "model 'missing' not found", (e.status_code, e.error)
    else:
        raise AssertionError("no ResponseError")


def error_mid_stream():
    seen = []
    try:
        for part in client.chat(model="failing", messages=[{"role": "user", "content": "Hi"}], stream=True):
            seen.append(part.message.content)
    except ollama.ResponseError as e:
        assert e.error == "the upstream went away", e.error
        assert seen == ["Hel"], seen
    else:
        raise AssertionError("no ResponseError")


for name, test in [
    ("a streamed chat is read part by part", chat_streamed),
    ("a whole chat is one ChatResponse", chat_whole),
    ("a streamed generate is read part by part", generate_streamed),
    ("a whole generate is one GenerateResponse", generate_whole),
    ("an empty prompt or chat loads the model", preload),
    ("the model list is a ListResponse", tags),
    ("an error status is a ResponseError", not_found),
    ("an error line mid-stream is a ResponseError", error_mid_stream),
]:
    check(name, test)

json.dump(requests, open(sys.argv[2], "w"))
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
