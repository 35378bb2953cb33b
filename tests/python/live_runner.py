"""What the scripts that drive an SDK against a live daemon share: the `check` they
assert with, and the main that parses `--socket`/`--model`, runs each test with the
SDK's client (over the Unix socket, or without `--socket` configured from the SDK's own
environment variables, as for loopback TCP), prints PASS/FAIL lines and exits non-zero if any failed."""

import argparse
import traceback
from typing import Any, Callable, List, Optional


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def run(description: str, make_client: Callable[[Optional[str]], Any], tests: List[Callable[[Any, str], None]]) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--socket",
        help="the HTTP front door's Unix socket; without it the SDK is configured the way a tool "
        "pointed at provd's loopback listener is: from its own environment variables (base URL and "
        "a provd token as the key)",
    )
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    c = make_client(args.socket)
    passed = failed = 0
    for test in tests:
        try:
            test(c, args.model)
            print(f"PASS {test.__name__}", flush=True)
            passed += 1
        except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
            print(f"FAIL {test.__name__}: {e!r}", flush=True)
            traceback.print_exc()
            failed += 1
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1
