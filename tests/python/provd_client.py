"""A small Python client for provd, written from client/PROTOCOL.md.

It needs only the standard library and the ``msgpack`` package::

    import provd_client
    with provd_client.connect() as client:
        for event in client.generate("Say hi"):
            if isinstance(event, provd_client.Chunk):
                print(event.text, end="", flush=True)
            else:  # the Done event, always last
                print("\\n", event.usage, event.finish_reason)

Design (see PROTOCOL.md sections 9 and 10):

- One socket per ``Client``. A background reader thread reads every frame and routes it by
  request id into a per-request queue. Any number of generations and calls can therefore
  run at once on one connection, from one thread or from many.
- Writes go through a lock, and each frame is written whole.
- ``generate`` sends the request at once and returns a ``Generation``, which is an iterator
  of ``Chunk`` events ending with one ``Done``. A terminal error is raised as ``ProvdError``.
"""

from __future__ import annotations

import itertools
import os
import queue
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

import msgpack

PROTOCOL_VERSION = 1

# Envelope type tags: [0, id, method, params], [1, id, error, result], [2, method, params].
REQUEST = 0
REPLY = 1
NOTIFICATION = 2

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
# The daemon does not cap its own frames (a stream=false answer is one frame), so accept
# much more than it accepts from us, but not an unbounded amount.
DEFAULT_MAX_INCOMING_FRAME_BYTES = 256 * 1024 * 1024

# The system-wide error codes: wire name -> stable integer (PROTOCOL.md section 11.2).
ERROR_CODES: Dict[str, int] = {
    "invalid_request": 1,
    "unauthenticated": 2,
    "permission_denied": 3,
    "not_found": 4,
    "rate_limited": 5,
    "overloaded": 6,
    "timeout": 7,
    "upstream_error": 8,
    "unavailable": 9,
    "cancelled": 10,
    "protocol_error": 11,
    "internal": 12,
}

FINISH_REASONS = ("stop", "length", "content_filter", "tool_calls", "other")
# Daemons before tools were carried said "tool_use" (PROTOCOL.md section 17.3).
FINISH_REASON_ALIASES = {"tool_use": "tool_calls"}


# --------------------------------------------------------------------------- errors


class ProvdError(Exception):
    """An error from the daemon (a reply's error map), or a local one that uses the same
    shape.

    ``code`` is the wire name (``"cancelled"``). Names that this client does not know
    become ``"internal"``, and ``wire_code`` keeps the name exactly as the daemon sent it.
    """

    def __init__(
        self,
        code: str,
        message: str,
        retryable: bool = False,
        retry_after_ms: Optional[int] = None,
        chunks: Optional[int] = None,
        usage: Optional[Dict[str, int]] = None,
    ):
        self.wire_code = code
        self.code = code if code in ERROR_CODES else "internal"
        self.message = message
        self.retryable = bool(retryable)
        self.retry_after_ms = retry_after_ms
        self.chunks = chunks
        self.usage = usage
        super().__init__(f"{self.code}: {message}")

    @property
    def code_value(self) -> int:
        """The integer value of the code, as the C ABI reports it."""
        return ERROR_CODES[self.code]

    @classmethod
    def from_wire(cls, error: Any) -> "ProvdError":
        if not isinstance(error, dict):
            return cls("protocol_error", f"malformed error object from the daemon: {error!r}")
        return cls(
            code=str(error.get("code", "internal")),
            message=str(error.get("message", "")),
            retryable=bool(error.get("retryable", False)),
            retry_after_ms=error.get("retry_after_ms"),
            chunks=error.get("chunks"),
            usage=error.get("usage"),
        )


class ConnectionClosed(ProvdError):
    """The connection ended before the answer came (code ``unavailable``)."""

    def __init__(self, reason: str):
        super().__init__("unavailable", f"connection to provd closed: {reason}")
        self.reason = reason


# --------------------------------------------------------------------------- events


@dataclass
class Chunk:
    """A ``chunk`` notification: one piece of generation ``id``'s text, or a piece of a tool
    call (``tool_call``) or of the reasoning (``reasoning``), with ``text`` "" then
    (PROTOCOL.md section 17.2)."""

    id: int
    index: int
    text: str
    model: str
    created_at: int
    seq: int = 0  # arrival order on the connection (added by this client, not on the wire)
    tool_call: Optional[Dict[str, Any]] = None
    reasoning: Optional[str] = None


@dataclass
class Done:
    """The successful terminal result of a generation. Nothing follows it."""

    provider: str
    model: str
    usage: Dict[str, int]
    finish_reason: str
    chunks: int
    text: Optional[str]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)
    seq: int = 0
    tool_calls: List[Dict[str, str]] = field(default_factory=list)
    reasoning: Optional[str] = None
    provider_state: Any = None

    def assistant_turn(self, text: str = "") -> Dict[str, Any]:
        """The assistant turn to send back in the next request: the text, the tool calls
        and the provider state, unchanged (PROTOCOL.md section 17.4)."""
        turn: Dict[str, Any] = {"role": "assistant", "content": text}
        if self.tool_calls:
            turn["tool_calls"] = self.tool_calls
        if self.provider_state is not None:
            turn["provider_state"] = self.provider_state
        return turn


# --------------------------------------------------------------------------- framing


def default_socket_path() -> str:
    """The socket path, resolved as in PROTOCOL.md section 2.1."""
    env = os.environ.get("PROVD_SOCKET")
    if env:
        return env
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "provd", "provd.sock")
    uid = os.geteuid()
    if uid == 0:
        return "/run/provd/provd.sock"
    return f"/tmp/provd-{uid}/provd.sock"


class UntrustedDaemon(ProvdError):
    """The socket, or the process listening on it, failed the check of PROTOCOL.md
    section 2.4. Nothing was sent."""

    def __init__(self, path: str, reason: str):
        super().__init__(
            "permission_denied",
            f"refusing to talk to provd at {path}, nothing was sent: {reason}",
        )
        self.path = path


def _group_or_other_writable(mode: int) -> bool:
    return mode & 0o022 != 0


def trusted_socket_path(path: str) -> "tuple[str, int]":
    """Steps 1 to 4 of PROTOCOL.md section 2.4: the resolved socket path and the owner of
    its directory, or UntrustedDaemon naming the path, the owner found and the rule."""
    me = os.geteuid()
    resolved = os.path.realpath(path)
    if not os.path.exists(resolved):
        raise FileNotFoundError(f"no provd socket at {path}")
    directory = os.path.dirname(resolved) or "/"
    st = os.lstat(directory)
    if _group_or_other_writable(st.st_mode):
        raise UntrustedDaemon(
            path,
            f"its directory {directory} (owner uid {st.st_uid}, mode {st.st_mode & 0o7777:o}) "
            "is writable by group or others",
        )
    owner = st.st_uid
    parent = os.path.dirname(directory) or "/"
    pst = os.lstat(parent)
    made_by_root = pst.st_uid == 0 and not _group_or_other_writable(pst.st_mode)
    if owner not in (0, me) and not made_by_root:
        raise UntrustedDaemon(
            path,
            f"its directory {directory} is owned by uid {owner}, not by root or uid {me}, "
            f"and its parent {parent} is not a root-owned directory nobody else can write",
        )
    ancestor = parent
    while True:
        ast = os.lstat(ancestor)
        if ast.st_uid not in (0, me):
            raise UntrustedDaemon(
                path, f"{ancestor} above it is owned by uid {ast.st_uid}, not by root or uid {me}"
            )
        if _group_or_other_writable(ast.st_mode) and not ast.st_mode & 0o1000:
            raise UntrustedDaemon(
                path,
                f"{ancestor} above it (mode {ast.st_mode & 0o7777:o}) is writable by group "
                "or others and not sticky",
            )
        if ancestor == "/":
            return resolved, owner
        ancestor = os.path.dirname(ancestor)


def check_listener(sock: socket.socket, path: str, owner: int) -> None:
    """Step 6 of PROTOCOL.md section 2.4: the process listening must run as the socket
    directory's owner or root."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    if uid not in (owner, 0):
        raise UntrustedDaemon(
            path,
            f"the process listening runs as uid {uid}, not as the directory's owner "
            f"(uid {owner}) or root",
        )


def pack(value: Any) -> bytes:
    """One MessagePack value, with strings as str and bytes as bin."""
    return msgpack.packb(value, use_bin_type=True)


def pack_frame(value: Any) -> bytes:
    """A whole frame: a 4-byte big-endian length, then the MessagePack value."""
    payload = pack(value)
    return HEADER.pack(len(payload)) + payload


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            break
        buf += part
    return bytes(buf)


def read_frame(sock: socket.socket, max_bytes: int = DEFAULT_MAX_INCOMING_FRAME_BYTES) -> Optional[bytes]:
    """Reads one frame's payload. Returns None on a clean end of stream between frames.

    Raises ConnectionClosed if the stream ends inside a frame, or if the announced length
    is over ``max_bytes``.
    """
    header = _recv_exact(sock, HEADER.size)
    if not header:
        return None
    if len(header) < HEADER.size:
        raise ConnectionClosed(f"stream ended inside a frame header ({len(header)} of 4 bytes)")
    (length,) = HEADER.unpack(header)
    if length > max_bytes:
        raise ConnectionClosed(f"daemon announced a frame of {length} bytes (limit {max_bytes})")
    payload = _recv_exact(sock, length)
    if len(payload) < length:
        raise ConnectionClosed(f"stream ended inside a frame ({len(payload)} of {length} bytes)")
    return payload


def unpack(payload: bytes) -> Any:
    """Decodes exactly one MessagePack value (trailing bytes are an error)."""
    return msgpack.unpackb(payload, raw=False)


# --------------------------------------------------------------------------- client


_CLOSED = "closed"
_REPLY = "reply"
_CHUNK = "chunk"


class Client:
    """One connection to the daemon. Thread-safe: calls and generations may run at once
    from any number of threads."""

    def __init__(self, sock: socket.socket, client_name: str = "provd_client.py", timeout: Optional[float] = 30.0):
        self._sock = sock
        self._timeout = timeout
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()  # guards _waiters, _closed, _next_id
        self._waiters: Dict[int, "queue.Queue[tuple]"] = {}
        # Requests sent with an id that was already outstanding (only with a caller-chosen
        # id), newest last: the daemon refuses each with an `error` notice carrying the
        # id, and that notice belongs to the newest (PROTOCOL.md section 10).
        self._duplicates: Dict[int, "List[queue.Queue[tuple]]"] = {}
        self._closed: Optional[str] = None
        self._next_id = 1
        self._seq = itertools.count(1)
        self.max_frame_bytes = DEFAULT_MAX_FRAME_BYTES
        #: Every ``error`` notification received, in order (each is a ProvdError).
        self.error_notifications: "queue.Queue[ProvdError]" = queue.Queue()
        self._last_error_notification: Optional[ProvdError] = None
        self._reader = threading.Thread(target=self._read_loop, name="provd-reader", daemon=True)
        self._reader.start()
        try:
            self.hello_result: Dict[str, Any] = self._call_with_id(
                0, "hello", {"protocol_version": PROTOCOL_VERSION, "client": client_name}
            )
        except BaseException:
            self.close()
            raise
        self.max_frame_bytes = int(self.hello_result.get("max_frame_bytes", DEFAULT_MAX_FRAME_BYTES))

    # -- properties from the hello

    @property
    def protocol_version(self) -> int:
        return self.hello_result["protocol_version"]

    @property
    def daemon_version(self) -> str:
        return self.hello_result["daemon_version"]

    @property
    def max_streams(self) -> int:
        return self.hello_result.get("max_streams", 0)

    # -- methods

    def ping(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        return self.request("ping", {}, timeout=timeout)

    def list_providers(self, timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        return self.request("list_providers", {}, timeout=timeout)["providers"]

    def list_models(self, provider: Optional[str] = None, timeout: Optional[float] = None) -> Dict[str, Any]:
        """The ``list_models`` result: ``{"models": [...], "errors": [...]}``."""
        params = {} if provider is None else {"provider": provider}
        return self.request("list_models", params, timeout=timeout)

    def status(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        return self.request("status", {}, timeout=timeout)

    def cancel(self, generation_id: int, timeout: Optional[float] = None) -> None:
        """Asks the daemon to cancel generation ``generation_id``. The generation then ends
        with a ``cancelled`` error (or with its done result, if it finished first). Raises
        ProvdError ``not_found`` if no such generation is running."""
        self.request("cancel", {"id": generation_id}, timeout=timeout)

    def generate(
        self,
        prompt: Optional[str] = None,
        *,
        messages: Optional[List[Dict[str, Any]]] = None,
        provider: Optional[str] = None,
        model: Optional[str] = None,
        system: Optional[str] = None,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        stop: Optional[List[str]] = None,
        stream: bool = True,
        additional_params: Optional[Dict[str, Any]] = None,
        tools: Optional[List[Dict[str, Any]]] = None,
        tool_choice: Any = None,
        response_format: Optional[Dict[str, Any]] = None,
        reasoning: Optional[Dict[str, Any]] = None,
        timeout: Optional[float] = None,
        req_id: Optional[int] = None,
        **extra: Any,
    ) -> "Generation":
        """Starts a generation now and returns it. Iterate the result for ``Chunk`` events
        and a final ``Done``. ``extra`` adds params that this client does not know.
        ``req_id`` chooses the request id (by default the client picks a free one); an id
        still in use by a running request gets the request refused (``invalid_request``)."""
        params: Dict[str, Any] = {}
        optional = {
            "provider": provider,
            "model": model,
            "prompt": prompt,
            "messages": messages,
            "system": system,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stop": stop,
            "additional_params": additional_params,
            "tools": tools,
            "tool_choice": tool_choice,
            "response_format": response_format,
            "reasoning": reasoning,
        }
        # Leave out what is not set: list/map fields refuse nil (PROTOCOL.md section 5).
        params.update({k: v for k, v in optional.items() if v is not None})
        params["stream"] = stream
        params.update(extra)
        gen_id, replies = self._start("generate", params, req_id)
        return Generation(self, gen_id, replies, self._timeout if timeout is None else timeout)

    def generate_text(self, prompt: Optional[str] = None, **kwargs: Any) -> "tuple[str, Done]":
        """Runs a generation to its end; returns (whole text, Done)."""
        return self.generate(prompt, **kwargs).collect()

    def request(
        self, method: str, params: Any, timeout: Optional[float] = None, req_id: Optional[int] = None
    ) -> Any:
        """Sends any request and waits for its reply; returns the result or raises
        ProvdError. ``req_id`` as for ``generate``."""
        req_id, replies = self._start(method, params, req_id)
        return self._wait_reply(req_id, replies, timeout)

    # -- lifecycle

    def close(self) -> None:
        """Closes the connection. The daemon cancels every generation it started."""
        self._mark_closed("the client closed the connection")
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=5)

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed is not None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- plumbing

    def _allocate_id(self) -> int:
        # Called with self._lock held. Ids must be unique among outstanding requests.
        while True:
            candidate = self._next_id
            self._next_id = (self._next_id + 1) % (1 << 32)
            if candidate not in self._waiters:
                return candidate

    def _register(self, req_id: Optional[int]) -> "tuple[int, queue.Queue]":
        replies: "queue.Queue[tuple]" = queue.Queue()
        with self._lock:
            if self._closed is not None:
                raise ConnectionClosed(self._closed)
            if req_id is None:
                req_id = self._allocate_id()
            if req_id in self._waiters:
                # The reply with this id is the running request's; this one will be refused.
                self._duplicates.setdefault(req_id, []).append(replies)
            else:
                self._waiters[req_id] = replies
        return req_id, replies

    def _unregister(self, req_id: int, replies: "queue.Queue") -> None:
        with self._lock:
            if self._waiters.get(req_id) is replies:
                del self._waiters[req_id]
                return
            shadowed = self._duplicates.get(req_id, [])
            if replies in shadowed:
                shadowed.remove(replies)
                if not shadowed:
                    del self._duplicates[req_id]

    def _start(self, method: str, params: Any, req_id: Optional[int] = None) -> "tuple[int, queue.Queue]":
        req_id, replies = self._register(req_id)
        try:
            self._send([REQUEST, req_id, method, params])
        except BaseException:
            self._unregister(req_id, replies)
            raise
        return req_id, replies

    def _send(self, envelope: List[Any]) -> None:
        payload = pack(envelope)
        if len(payload) > self.max_frame_bytes:
            # Sending it would make the daemon close the connection.
            raise ProvdError(
                "invalid_request",
                f"request of {len(payload)} bytes exceeds the daemon's max_frame_bytes of {self.max_frame_bytes}",
            )
        frame = HEADER.pack(len(payload)) + payload
        with self._write_lock:
            try:
                self._sock.sendall(frame)
            except OSError as e:
                raise ConnectionClosed(f"write failed: {e}") from None

    def _call_with_id(self, req_id: int, method: str, params: Any) -> Any:
        req_id, replies = self._start(method, params, req_id)
        return self._wait_reply(req_id, replies, None)

    def _wait_reply(self, req_id: int, replies: "queue.Queue", timeout: Optional[float]) -> Any:
        wait = self._timeout if timeout is None else timeout
        try:
            item = replies.get(timeout=wait)
        except queue.Empty:
            self._unregister(req_id, replies)
            raise ProvdError("timeout", f"no reply to request {req_id} within {wait} s") from None
        kind = item[0]
        if kind == _CLOSED:
            raise item[1]
        # A unary request gets exactly one frame: its reply.
        _, error, result, _seq = item
        if error is not None:
            raise ProvdError.from_wire(error)
        return result

    def _read_loop(self) -> None:
        reason = "the daemon closed the connection"
        try:
            while True:
                payload = read_frame(self._sock)
                if payload is None:
                    break
                self._route(unpack(payload))
        except ConnectionClosed as e:
            reason = e.reason
        except OSError as e:
            reason = f"read failed: {e}"
        except (ValueError, msgpack.UnpackException) as e:
            reason = f"the daemon sent an unreadable frame: {e}"
        # The last error notification usually says why the daemon closed the connection.
        if self._last_error_notification is not None and reason == "the daemon closed the connection":
            reason = f"{reason} after: {self._last_error_notification}"
        self._mark_closed(reason)

    def _route(self, envelope: Any) -> None:
        if not isinstance(envelope, list) or not envelope:
            raise ValueError(f"not an envelope: {envelope!r}")
        tag = envelope[0]
        seq = next(self._seq)
        if tag == REPLY and len(envelope) == 4:
            _, req_id, error, result = envelope
            with self._lock:
                # Ids are unique among outstanding requests, and nothing follows a reply.
                target = self._waiters.pop(req_id, None)
            if target is not None:
                target.put((_REPLY, error, result, seq))
        elif tag == NOTIFICATION and len(envelope) == 3:
            _, method, params = envelope
            if method == "chunk" and isinstance(params, dict):
                with self._lock:
                    target = self._waiters.get(params.get("id"))
                if target is not None:
                    target.put((_CHUNK, params, seq))
            elif method == "error":
                err = ProvdError.from_wire(params)
                req_id = params.get("id") if isinstance(params, dict) else None
                refused = None
                if req_id is not None:
                    # A notice with an id refuses the newest request sent with that id.
                    with self._lock:
                        shadowed = self._duplicates.get(req_id)
                        if shadowed:
                            refused = shadowed.pop()
                            if not shadowed:
                                del self._duplicates[req_id]
                if refused is not None:
                    refused.put((_REPLY, params, None, seq))
                else:
                    self._last_error_notification = err
                self.error_notifications.put(err)
            # Other notifications (added by newer daemons) are skippable.
        else:
            raise ValueError(f"unexpected envelope from the daemon: {envelope!r}")

    def _mark_closed(self, reason: str) -> None:
        with self._lock:
            if self._closed is None:
                self._closed = reason
            waiters, self._waiters = list(self._waiters.values()), {}
            for shadowed in self._duplicates.values():
                waiters.extend(shadowed)
            self._duplicates = {}
            reason = self._closed
        for replies in waiters:
            replies.put((_CLOSED, ConnectionClosed(reason)))


class Generation:
    """A running generation: iterate it for ``Chunk`` events, then one ``Done``. A terminal
    error is raised as ``ProvdError`` (with ``chunks`` and ``usage`` when the daemon sent
    them). Use it as a context manager to cancel it if you stop early."""

    def __init__(self, client: Client, gen_id: int, replies: "queue.Queue", timeout: Optional[float]):
        self.client = client
        self.id = gen_id
        self._replies = replies
        self._timeout = timeout
        self._next_index = 0
        self.finished = False
        self.done: Optional[Done] = None

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self.finished:
            raise StopIteration
        try:
            item = self._replies.get(timeout=self._timeout)
        except queue.Empty:
            raise ProvdError("timeout", f"no frame for generation {self.id} within {self._timeout} s") from None
        kind = item[0]
        if kind == _CHUNK:
            _, params, seq = item
            chunk = Chunk(
                id=params["id"],
                index=params["index"],
                text=params["text"],
                model=params.get("model", ""),
                created_at=params.get("created_at", 0),
                seq=seq,
                tool_call=params.get("tool_call"),
                reasoning=params.get("reasoning"),
            )
            if chunk.index != self._next_index:
                self._finish()
                raise ProvdError(
                    "protocol_error",
                    f"generation {self.id}: chunk index {chunk.index} arrived, expected {self._next_index}",
                )
            self._next_index += 1
            return chunk
        self.finished = True
        if kind == _CLOSED:
            raise item[1]
        _, error, result, seq = item
        if error is not None:
            raise ProvdError.from_wire(error)
        reason = result.get("finish_reason", "other")
        reason = FINISH_REASON_ALIASES.get(reason, reason)
        self.done = Done(
            provider=result.get("provider", ""),
            model=result.get("model", ""),
            usage=result.get("usage") or {},
            finish_reason=reason if reason in FINISH_REASONS else "other",
            chunks=result.get("chunks", 0),
            text=result.get("text"),
            raw=result,
            seq=seq,
            tool_calls=result.get("tool_calls") or [],
            reasoning=result.get("reasoning"),
            provider_state=result.get("provider_state"),
        )
        return self.done

    def cancel(self) -> None:
        """Asks the daemon to stop this generation. Keep iterating to see its end (a
        ``cancelled`` error, or its done result if it won the race)."""
        self.client.cancel(self.id)

    def collect(self) -> "tuple[str, Done]":
        """Reads to the end; returns (whole text, Done)."""
        parts: List[str] = []
        for event in self:
            if isinstance(event, Chunk):
                parts.append(event.text)
            else:
                if event.text is not None:
                    parts.append(event.text)
                return "".join(parts), event
        raise ConnectionClosed("the generation ended without a terminal reply")

    def _finish(self) -> None:
        self.finished = True
        self.client._unregister(self.id, self._replies)

    def __enter__(self) -> "Generation":
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.finished:
            self._finish()
            try:
                self.client.cancel(self.id)
            except ProvdError:
                pass  # it ended meanwhile, or the connection is gone


def connect(
    path: Optional[str] = None,
    client_name: str = "provd_client.py",
    timeout: Optional[float] = 30.0,
) -> Client:
    """Connects to the daemon at ``path`` (default: section 2.1 of PROTOCOL.md) and
    exchanges hellos. ``timeout`` bounds each wait for a reply or a frame (None: wait
    forever). Raises ProvdError (for example ``protocol_error`` on a version mismatch)
    or OSError if the socket cannot be reached; UntrustedDaemon (before a byte is sent)
    if the socket or its listener fails the check of section 2.4."""
    path = path or default_socket_path()
    resolved, owner = trusted_socket_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(resolved)
        check_listener(sock, path, owner)
        sock.settimeout(None)  # the reader thread blocks; waits are bounded by queue timeouts
    except BaseException:
        sock.close()
        raise
    return Client(sock, client_name=client_name, timeout=timeout)
