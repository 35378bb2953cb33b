#!/usr/bin/env python3
"""A Python caller of libprovd through ctypes, run by tests/tests/ffi.rs.

Usage: ffi_stream.py --lib PATH/libprovd.so --socket SOCKET_PATH

Streams a generation from the mock provider with a Python chunk callback and with the
pull API, stops one from the callback, and checks that an unknown provider fails with
PROVD_NOT_FOUND and a message. Standard library only. Prints "python: N failed".
"""

import argparse
import ctypes
import sys
from ctypes import (
    POINTER,
    Structure,
    byref,
    c_bool,
    c_char_p,
    c_int,
    c_size_t,
    c_uint32,
    c_void_p,
)

PROVD_OK = 0
PROVD_NOT_FOUND = 4
PROVD_CANCELLED = 10
PROVD_CONTINUE = 0
PROVD_STOP = 1
PROVD_FINISH_STOP = 0


class ProvdStr(Structure):
    """provd_str: a borrowed UTF-8 string, pointer + length."""

    _fields_ = [("data", c_void_p), ("len", c_size_t)]

    def text(self):
        if not self.data:
            return None
        return ctypes.string_at(self.data, self.len).decode("utf-8")


class ProvdUsage(Structure):
    _fields_ = [
        ("prompt_tokens", c_uint32),
        ("completion_tokens", c_uint32),
        ("total_tokens", c_uint32),
    ]


# int (*)(void *userdata, const char *text, size_t len, uint32_t index)
CHUNK_CALLBACK = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t, c_uint32)

# Opaque handles are plain pointers.
Handle = c_void_p
Out = POINTER(c_void_p)
Status = c_uint32


def load(path):
    lib = ctypes.CDLL(path)
    sig = {
        "provd_version": (c_char_p, []),
        "provd_status_name": (c_char_p, [c_uint32]),
        "provd_client_connect": (Status, [c_char_p, c_size_t, Out, Out]),
        "provd_client_free": (None, [Handle]),
        "provd_request_new": (Status, [Out, Out]),
        "provd_request_free": (None, [Handle]),
        "provd_request_set_prompt": (Status, [Handle, c_char_p, c_size_t, Out]),
        "provd_request_set_provider": (Status, [Handle, c_char_p, c_size_t, Out]),
        "provd_request_set_additional_params_json": (Status, [Handle, c_char_p, c_size_t, Out]),
        "provd_client_generate": (
            Status,
            [Handle, Handle, CHUNK_CALLBACK, c_void_p, Handle, Out, Out],
        ),
        "provd_stream_start": (Status, [Handle, Handle, Out, Out]),
        "provd_stream_next": (Status, [Handle, POINTER(ProvdStr), Out]),
        "provd_stream_finish": (Status, [Handle, Out, Out]),
        "provd_stream_free": (None, [Handle]),
        "provd_done_usage": (Status, [Handle, POINTER(ProvdUsage)]),
        "provd_done_finish_reason": (Status, [Handle, POINTER(c_uint32)]),
        "provd_done_free": (None, [Handle]),
        "provd_error_code": (Status, [Handle]),
        "provd_error_message": (Status, [Handle, POINTER(ProvdStr)]),
        "provd_error_chunks": (Status, [Handle, POINTER(c_uint32), POINTER(c_bool)]),
        "provd_error_free": (None, [Handle]),
    }
    for name, (restype, argtypes) in sig.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


class ProvdError(Exception):
    def __init__(self, lib, status, err):
        self.status = status
        message = ProvdStr()
        text = "(no message)"
        if err.value and lib.provd_error_message(err, byref(message)) == PROVD_OK:
            text = message.text()
        self.chunks = None
        chunks, known = c_uint32(), c_bool()
        if err.value and lib.provd_error_chunks(err, byref(chunks), byref(known)) == PROVD_OK:
            self.chunks = chunks.value if known.value else None
        super().__init__("%s: %s" % (lib.provd_status_name(status).decode(), text))


def check_call(lib, status, err):
    """Raises ProvdError for a failed call; frees the error object either way."""
    try:
        if status != PROVD_OK:
            raise ProvdError(lib, status, err)
    finally:
        lib.provd_error_free(err)


def arg(text):
    data = text.encode("utf-8")
    return data, len(data)


class Client:
    def __init__(self, lib, socket):
        self.lib = lib
        self.handle = c_void_p()
        err = c_void_p()
        check_call(lib, lib.provd_client_connect(*arg(socket), byref(self.handle), byref(err)), err)

    def close(self):
        self.lib.provd_client_free(self.handle)

    def request(self, prompt, params_json, provider=None):
        lib, req, err = self.lib, c_void_p(), c_void_p()
        check_call(lib, lib.provd_request_new(byref(req), byref(err)), err)
        check_call(lib, lib.provd_request_set_prompt(req, *arg(prompt), byref(err)), err)
        check_call(
            lib, lib.provd_request_set_additional_params_json(req, *arg(params_json), byref(err)), err
        )
        if provider is not None:
            check_call(lib, lib.provd_request_set_provider(req, *arg(provider), byref(err)), err)
        return req

    def generate(self, req, on_chunk):
        """Callback API: on_chunk(text, index) returns True to go on."""
        lib = self.lib

        def trampoline(_userdata, text, length, index):
            go_on = on_chunk(ctypes.string_at(text, length).decode("utf-8"), index)
            return PROVD_CONTINUE if go_on else PROVD_STOP

        callback = CHUNK_CALLBACK(trampoline)  # kept alive for the call
        done, err = c_void_p(), c_void_p()
        status = lib.provd_client_generate(self.handle, req, callback, None, None, byref(done), byref(err))
        check_call(lib, status, err)
        return self._done(done)

    def stream(self, req):
        """Pull API: yields chunk texts, then returns the done result."""
        lib = self.lib
        stream, err = c_void_p(), c_void_p()
        check_call(lib, lib.provd_stream_start(self.handle, req, byref(stream), byref(err)), err)
        try:
            text = ProvdStr()
            while True:
                check_call(lib, lib.provd_stream_next(stream, byref(text), byref(err)), err)
                if text.data is None:
                    break
                yield text.text()
            done = c_void_p()
            check_call(lib, lib.provd_stream_finish(stream, byref(done), byref(err)), err)
            return self._done(done)
        finally:
            lib.provd_stream_free(stream)

    def _done(self, done):
        usage, reason = ProvdUsage(), c_uint32()
        self.lib.provd_done_usage(done, byref(usage))
        self.lib.provd_done_finish_reason(done, byref(reason))
        self.lib.provd_done_free(done)
        return usage, reason.value


def numbered(n):
    return "".join("%d " % i for i in range(n))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", required=True)
    parser.add_argument("--socket", required=True)
    args = parser.parse_args()

    failed = 0

    def check(ok, what):
        nonlocal failed
        if not ok:
            failed += 1
            print("FAIL:", what, file=sys.stderr)

    lib = load(args.lib)
    print("libprovd", lib.provd_version().decode())
    client = Client(lib, args.socket)
    lib_free = lib.provd_request_free

    # Callback API.
    chunks = []
    req = client.request("count for me", '{"mock": {"numbered": true, "chunks": 9}}')
    usage, reason = client.generate(req, lambda text, index: chunks.append((index, text)) or True)
    lib_free(req)
    text = "".join(t for _, t in chunks)
    check(text == numbered(9), "callback text %r" % text)
    check([i for i, _ in chunks] == list(range(9)), "indexes %r" % chunks)
    check((usage.prompt_tokens, usage.completion_tokens) == (3, 9), "usage")
    check(reason == PROVD_FINISH_STOP, "finish reason %d" % reason)
    print("python callback:", text)

    # Stopping from the callback.
    seen = []
    req = client.request("count for me", '{"mock": {"numbered": true, "chunks": 40}}')
    try:
        client.generate(req, lambda text, index: seen.append(text) or len(seen) < 2)
        check(False, "a stopped generation succeeded")
    except ProvdError as e:
        check(e.status == PROVD_CANCELLED and e.chunks == 2 and len(seen) == 2, str(e))
    lib_free(req)

    # Pull API.
    req = client.request("count for me", '{"mock": {"numbered": true, "chunks": 7}}')
    gen = client.stream(req)
    pulled = []
    try:
        while True:
            pulled.append(next(gen))
    except StopIteration as end:
        usage, reason = end.value
    lib_free(req)
    check("".join(pulled) == numbered(7), "stream text %r" % pulled)
    check(usage.completion_tokens == 7, "stream usage")
    print("python stream:", "".join(pulled))

    # An unknown provider.
    req = client.request("hi", "{}", provider="no-such-provider")
    try:
        client.generate(req, lambda text, index: True)
        check(False, "an unknown provider succeeded")
    except ProvdError as e:
        check(e.status == PROVD_NOT_FOUND and "no-such-provider" in str(e), str(e))
        print("python error:", e)
    lib_free(req)

    client.close()
    print("python: %d failed" % failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
