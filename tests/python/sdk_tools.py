#!/usr/bin/env python3
"""Tool loops, structured output and reasoning with the official ``openai`` and
``anthropic`` Python SDKs against provd's HTTP front door.

    target/python-venv/bin/python tests/python/sdk_tools.py --sdk openai \
        --socket DIR/http.sock --model m/mock-1
    target/python-venv/bin/python tests/python/sdk_tools.py --sdk anthropic \
        --socket DIR/http.sock --model m/mock-1

``--answer`` (``{result}`` for the tool's result) and ``--reasoning`` (``{question}`` for
the last user text) say what the provider behind answers after a tool's result and how it
reasons; their defaults are the mock's. An empty ``--reasoning`` runs the Anthropic tool
loops without thinking (a provider behind that shows no reasoning text). ``--forged-state
JSON`` is a provider state the provider refuses, sent back in place of the real one to
prove the state reaches it. ``--only a,b`` runs only the tests so named (what a provider
behind can do: the JSON-instance checks assume the mock, say).

Run by tests/tests/http_tools.rs against a daemon whose provider is a parameter of the
test (the built-in mock, which calls the tool it is given with the least arguments its
schema accepts, answers ``The tool NAME returned: RESULT`` after a tool's result, the
least instance of a JSON schema, and reasons ``Thinking about: …`` when asked). Each tool
loop is a real one: the model's call is executed here, its result sent back with the
assistant turn exactly as the SDK returned it, and the final answer checked.

With ``--sdk openai``: a tool loop not streamed and one streamed through the SDK's
``chat.completions.stream`` helper (which assembles ``delta.tool_calls``), a
``response_format`` json_schema request through ``chat.completions.parse`` with a
pydantic model, and ``reasoning_effort`` (``reasoning_content``, the reasoning tokens,
and the message sent back with its provider state). With ``--sdk anthropic``: a tool
loop with thinking not streamed and one through ``messages.stream`` (which assembles
``input_json_delta``, ``thinking_delta`` and ``signature_delta``), and ``messages.parse``
with a pydantic ``output_format``. One line per test (``PASS name`` or ``FAIL name:
reason``), then ``N passed, M failed``; exit 0 only when nothing failed.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Dict, List, Optional

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

from live_runner import check, run  # noqa: E402  (beside this script)

import pydantic  # noqa: E402

try:  # the SDKs' HTTP client: httpx2 in recent releases, httpx before
    import httpx2 as httpx  # noqa: E402
except ImportError:  # pragma: no cover
    import httpx  # noqa: E402

TIMEOUT_S = 30.0
WEATHER = "15 degrees and sunny"
QUESTION = "What is the weather in Paris?"
# What the provider behind says (main() sets them from --answer and --reasoning).
EXPECTED: Dict[str, Optional[str]] = {
    "answer": "The tool get_weather returned: {result}",
    "reasoning": "Thinking about: {question}",
    "forged_state": None,
}


def answer_to(result: str) -> str:
    return str(EXPECTED["answer"]).replace("{result}", result)


def reasoning_about(question: str) -> str:
    return str(EXPECTED["reasoning"]).replace("{question}", question)


def get_weather(city: str) -> str:
    """The tool the model calls, run here as an application would run it."""
    check(isinstance(city, str), f"city {city!r}")
    return WEATHER


def transport(socket: Optional[str]) -> Dict[str, Any]:
    if socket is None:
        return {}  # configured from the SDK's own environment variables
    return {"http_client": httpx.Client(transport=httpx.HTTPTransport(uds=socket), timeout=TIMEOUT_S)}


# ---- openai ----------------------------------------------------------------------------

OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }
]


def openai_client(socket: Optional[str]) -> Any:
    import openai

    if socket is None:
        return openai.OpenAI(timeout=TIMEOUT_S, max_retries=0)
    return openai.OpenAI(api_key="sk-placeholder", base_url="http://provd/v1", max_retries=0, **transport(socket))


def openai_results(message: Any) -> List[Dict[str, Any]]:
    """Runs the calls of an assistant message; the tool messages to send back."""
    check(bool(message.tool_calls), f"no tool calls in {message}")
    results = []
    for call in message.tool_calls:
        check(call.type == "function", f"call type {call.type}")
        check(call.function.name == "get_weather", f"called {call.function.name}")
        arguments = json.loads(call.function.arguments)
        results.append({"role": "tool", "tool_call_id": call.id, "content": get_weather(**arguments)})
    return results


def openai_tool_loop_not_streamed(c: Any, model: str) -> None:
    messages: List[Any] = [{"role": "user", "content": QUESTION}]
    r = c.chat.completions.create(model=model, messages=messages, tools=OPENAI_TOOLS, tool_choice="auto")
    choice = r.choices[0]
    check(choice.finish_reason == "tool_calls", f"finish {choice.finish_reason}")
    check(choice.message.content is None, f"content {choice.message.content!r}")
    messages.append(choice.message)  # the SDK's own object, sent back as it came
    messages.extend(openai_results(choice.message))
    r = c.chat.completions.create(model=model, messages=messages, tools=OPENAI_TOOLS)
    answer = r.choices[0].message.content
    check(answer == answer_to(WEATHER), f"answer {answer!r}")
    check(r.choices[0].finish_reason == "stop", f"finish {r.choices[0].finish_reason}")


def openai_tool_loop_streamed(c: Any, model: str) -> None:
    messages: List[Any] = [{"role": "user", "content": QUESTION}]
    with c.chat.completions.stream(model=model, messages=messages, tools=OPENAI_TOOLS) as stream:
        pieces = [e for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    check(len(pieces) >= 1, f"{len(pieces)} argument pieces")
    choice = final.choices[0]
    check(choice.finish_reason == "tool_calls", f"finish {choice.finish_reason}")
    call = choice.message.tool_calls[0]
    check(call.function.parsed_arguments is not None, "the helper parsed the arguments")
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": t.id, "type": "function", "function": {"name": t.function.name, "arguments": t.function.arguments}}
                for t in choice.message.tool_calls
            ],
        }
    )
    messages.extend(openai_results(choice.message))
    with c.chat.completions.stream(model=model, messages=messages, tools=OPENAI_TOOLS) as stream:
        text = "".join(e.delta for e in stream if e.type == "content.delta")
    check(text == answer_to(WEATHER), f"answer {text!r}")


class City(pydantic.BaseModel):
    city: str
    rank: int


def openai_json_schema_parse(c: Any, model: str) -> None:
    r = c.chat.completions.parse(
        model=model, messages=[{"role": "user", "content": "Name a city"}], response_format=City
    )
    parsed = r.choices[0].message.parsed
    check(isinstance(parsed, City), f"parsed {parsed!r}")
    json.loads(r.choices[0].message.content)


def openai_reasoning_effort(c: Any, model: str) -> None:
    messages: List[Any] = [{"role": "user", "content": "Name a city"}]
    r = c.chat.completions.create(model=model, messages=messages, reasoning_effort="low")
    message = r.choices[0].message
    extra = message.model_extra or {}
    check(extra.get("reasoning_content") == reasoning_about("Name a city"), f"extra {extra}")
    details = r.usage.completion_tokens_details
    check(details is not None and (details.reasoning_tokens or 0) > 0, f"usage {r.usage}")
    # Sent back as the SDK returned it: its provider state goes with it (an altered one is
    # refused by the provider, which proves the SDK sent it).
    r = c.chat.completions.create(
        model=model, messages=messages + [message, {"role": "user", "content": "Another"}], reasoning_effort="low"
    )
    check(r.choices[0].message.content is not None, "an answer to the second turn")
    if EXPECTED["forged_state"] is None:
        return
    forged = message.model_copy(deep=True)
    forged.provider_state = json.loads(EXPECTED["forged_state"])
    try:
        c.chat.completions.create(
            model=model, messages=messages + [forged, {"role": "user", "content": "Another"}], reasoning_effort="low"
        )
    except Exception as e:  # noqa: BLE001 - the SDK's error class is checked by name
        check(type(e).__name__ == "BadRequestError", f"refused with {e!r}")
    else:
        raise AssertionError("an altered provider state was taken")


# ---- anthropic -------------------------------------------------------------------------

ANTHROPIC_TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
THINKING = {"type": "enabled", "budget_tokens": 1024}


def anthropic_client(socket: Optional[str]) -> Any:
    import anthropic

    if socket is None:
        return anthropic.Anthropic(timeout=TIMEOUT_S, max_retries=0)
    return anthropic.Anthropic(api_key="sk-placeholder", base_url="http://provd", max_retries=0, **transport(socket))


def anthropic_results(content: List[Any]) -> Dict[str, Any]:
    """Runs the tool_use blocks of an answer; the user turn of their results."""
    calls = [b for b in content if b.type == "tool_use"]
    check(len(calls) >= 1, f"no tool_use in {content}")
    results = []
    for call in calls:
        check(call.name == "get_weather", f"called {call.name}")
        results.append({"type": "tool_result", "tool_use_id": call.id, "content": get_weather(**call.input)})
    return {"role": "user", "content": results}


def anthropic_check_thinking(content: List[Any]) -> None:
    thinking = "".join(b.thinking for b in content if b.type == "thinking")
    check(thinking == reasoning_about(QUESTION), f"thinking {thinking!r}")
    check(any(b.type == "thinking" and b.signature for b in content), "a signed thinking block")


def anthropic_final_text(content: List[Any]) -> None:
    text = "".join(b.text for b in content if b.type == "text")
    check(text == answer_to(WEATHER), f"answer {text!r}")


def thinks() -> bool:
    """Whether the provider behind reasons in text (an empty --reasoning says it does not)."""
    return bool(EXPECTED["reasoning"])


def thinking() -> Dict[str, Any]:
    return {"thinking": THINKING} if thinks() else {}


def anthropic_tool_loop_not_streamed(c: Any, model: str) -> None:
    messages: List[Any] = [{"role": "user", "content": QUESTION}]
    r = c.messages.create(model=model, max_tokens=4096, messages=messages, tools=ANTHROPIC_TOOLS, **thinking())
    check(r.stop_reason == "tool_use", f"stop {r.stop_reason}")
    if thinks():
        anthropic_check_thinking(r.content)
    # The blocks go back as the SDK returned them: the thinking block's signature carries
    # the provider's state.
    messages += [{"role": "assistant", "content": r.content}, anthropic_results(r.content)]
    r = c.messages.create(model=model, max_tokens=4096, messages=messages, tools=ANTHROPIC_TOOLS, **thinking())
    check(r.stop_reason == "end_turn", f"stop {r.stop_reason}")
    anthropic_final_text(r.content)


def anthropic_tool_loop_streamed(c: Any, model: str) -> None:
    messages: List[Any] = [{"role": "user", "content": QUESTION}]
    kwargs = dict(model=model, max_tokens=4096, tools=ANTHROPIC_TOOLS, **thinking())
    with c.messages.stream(messages=messages, **kwargs) as stream:
        kinds = {e.type for e in stream}
        final = stream.get_final_message()
    expected = {"input_json", "thinking", "signature"} if thinks() else {"input_json"}
    check(expected <= kinds, f"events {sorted(kinds)}")
    check(final.stop_reason == "tool_use", f"stop {final.stop_reason}")
    if thinks():
        anthropic_check_thinking(final.content)
    messages += [{"role": "assistant", "content": final.content}, anthropic_results(final.content)]
    with c.messages.stream(messages=messages, **kwargs) as stream:
        final = stream.get_final_message()
    anthropic_final_text(final.content)


class Capital(pydantic.BaseModel):
    city: str
    country: str


def anthropic_structured_output_parse(c: Any, model: str) -> None:
    r = c.messages.parse(
        model=model, max_tokens=200, messages=[{"role": "user", "content": "Name a capital"}], output_format=Capital
    )
    check(isinstance(r.parsed_output, Capital), f"parsed {r.parsed_output!r}")


SDKS: Dict[str, Any] = {
    "openai": (
        openai_client,
        [openai_tool_loop_not_streamed, openai_tool_loop_streamed, openai_json_schema_parse, openai_reasoning_effort],
    ),
    "anthropic": (
        anthropic_client,
        [anthropic_tool_loop_not_streamed, anthropic_tool_loop_streamed, anthropic_structured_output_parse],
    ),
}


def take_option(name: str) -> Optional[str]:
    """Removes `name VALUE` from the command line (the rest is live_runner's); its value."""
    if name not in sys.argv:
        return None
    at = sys.argv.index(name)
    value = sys.argv[at + 1] if at + 1 < len(sys.argv) else ""
    del sys.argv[at : at + 2]
    return value


def main() -> int:
    # --sdk, --answer and --reasoning are this script's own; --socket and --model are
    # live_runner's.
    sdk = take_option("--sdk")
    if sdk is None:
        print(
            "usage: sdk_tools.py --sdk openai|anthropic [--answer T] [--reasoning T] [--forged-state JSON] "
            "[--only TEST,…] [--socket PATH] --model MODEL",
            file=sys.stderr,
        )
        return 2
    for key in ("answer", "reasoning", "forged_state"):
        value = take_option(f"--{key.replace('_', '-')}")
        if value is not None:
            EXPECTED[key] = value
    if sdk not in SDKS:
        print(f"--sdk must be one of {sorted(SDKS)}, got {sdk!r}", file=sys.stderr)
        return 2
    make_client, tests = SDKS[sdk]
    only = take_option("--only")
    if only is not None:
        wanted = only.split(",")
        unknown = sorted(set(wanted) - {t.__name__ for t in tests})
        if unknown:
            print(f"--only names no test of {sdk}: {unknown}", file=sys.stderr)
            return 2
        tests = [t for t in tests if t.__name__ in wanted]
    make: Callable[[Optional[str]], Any] = make_client
    return run(f"the official {sdk} SDK: tools, structured output, reasoning", make, tests)


if __name__ == "__main__":
    sys.exit(main())
