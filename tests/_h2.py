"""A small HTTP/2 client over a real socket, built on the `h2` package (python-hyper), for
frame-level tests: it sends exactly what a test asks and records every event it receives."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

Headers = list[tuple[str, str]]


@dataclass
class StreamResult:
    headers: Headers = field(default_factory=list)
    informational: list[Headers] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None

    @property
    def status(self) -> int:
        return int(dict(self.headers)[":status"])

    def header(self, name: str) -> str | None:
        return dict(self.headers).get(name)


class H2Client:
    """One HTTP/2 connection: cleartext prior knowledge, or TLS with ALPN `h2`."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None,
                 validate: bool = True, timeout: float = 10.0,
                 auto_ack: bool = True) -> None:
        raw = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            raw = tls.wrap_socket(raw, server_hostname="localhost")
        self.sock = raw
        config = h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8",
            validate_outbound_headers=validate, normalize_outbound_headers=validate,
            validate_inbound_headers=True)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.streams: dict[int, StreamResult] = {}
        #: The error code of the last GOAWAY received.
        self.goaway: int | None = None
        self.closed = False
        #: Acknowledge received data at once (opens the window again).
        self.auto_ack = auto_ack
        self.remote_settings: dict[int, int] = {}
        self.flush()

    # -- sending -----------------------------------------------------------------------

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str = "/", method: str = "GET", headers: Headers = (),
                body: bytes | None = None, authority: str = "localhost",
                scheme: str = "http", end: bool = True) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        pseudo = [(":method", method), (":scheme", scheme), (":authority", authority),
                  (":path", path)]
        self.streams[stream_id] = StreamResult()
        self.conn.send_headers(stream_id, pseudo + list(headers),
                               end_stream=end and body is None)
        self.flush()
        if body is not None:
            self.send_body(stream_id, body, end=end)
        return stream_id

    def send_raw_headers(self, headers: Headers, end: bool = True) -> int:
        """Headers exactly as given (no pseudo-header added; needs validate=False)."""
        stream_id = self.conn.get_next_available_stream_id()
        self.streams[stream_id] = StreamResult()
        self.conn.send_headers(stream_id, headers, end_stream=end)
        self.flush()
        return stream_id

    def send_body(self, stream_id: int, body: bytes, end: bool = True,
                  deadline: float = 30.0) -> None:
        """Sends `body` as the peer's flow-control windows allow."""
        limit = time.monotonic() + deadline
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(stream_id),
                         self.conn.max_outbound_frame_size)
            if window <= 0:
                if time.monotonic() > limit:
                    raise TimeoutError("the server opened no window")
                self.receive_once()
                continue
            self.conn.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
            self.flush()
        if end:
            self.conn.end_stream(stream_id)
            self.flush()

    def reset(self, stream_id: int) -> None:
        self.conn.reset_stream(stream_id)
        self.flush()

    # -- receiving ---------------------------------------------------------------------

    def receive_once(self, timeout: float | None = None) -> bool:
        """Reads once and handles the events; False at end of stream."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return False
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            # Frames after a GOAWAY (the server's PING of a graceful shutdown) are an error
            # to the client's state machine: read the GOAWAY from the bytes themselves.
            self.goaway = _goaway_code(data, self.goaway)
            self.closed = True
            return False
        for event in events:
            self.handle(event)
        self.flush()
        return True

    def handle(self, event: Any) -> None:
        sid = getattr(event, "stream_id", None)
        result = self.streams.setdefault(sid, StreamResult()) if sid else None
        if isinstance(event, h2.events.ResponseReceived):
            result.headers = list(event.headers)
        elif isinstance(event, h2.events.InformationalResponseReceived):
            result.informational.append(list(event.headers))
        elif isinstance(event, h2.events.DataReceived):
            result.data += event.data
            if self.auto_ack and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
        elif isinstance(event, h2.events.StreamEnded):
            result.ended = True
        elif isinstance(event, h2.events.StreamReset):
            result.reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event.error_code
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for key, changed in event.changed_settings.items():
                self.remote_settings[int(key)] = changed.new_value

    def wait(self, stream_ids: list[int] | int, timeout: float = 10.0) -> list[StreamResult]:
        """Reads until every stream ended or was reset."""
        ids = [stream_ids] if isinstance(stream_ids, int) else list(stream_ids)
        limit = time.monotonic() + timeout
        while not all(self.streams[i].ended or self.streams[i].reset is not None for i in ids):
            left = limit - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"streams {ids} did not end")
            if not self.receive_once(timeout=left):
                break
        return [self.streams[i] for i in ids]

    def wait_closed(self, timeout: float = 10.0) -> None:
        limit = time.monotonic() + timeout
        while not self.closed:
            left = limit - time.monotonic()
            if left <= 0:
                raise TimeoutError("the server did not close the connection")
            try:
                self.receive_once(timeout=left)
            except socket.timeout:
                continue
            except OSError:
                self.closed = True

    def get(self, path: str = "/", timeout: float = 10.0, **kw: Any) -> StreamResult:
        return self.wait(self.request(path, **kw), timeout=timeout)[0]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _goaway_code(data: bytes, previous: int | None) -> int | None:
    """The error code of the last GOAWAY frame among whole frames in `data`."""
    code = previous
    view = memoryview(data)
    while len(view) >= 9:
        frame, length = hyperframe.frame.Frame.parse_frame_header(view[:9])
        if len(view) < 9 + length:
            break
        if isinstance(frame, hyperframe.frame.GoAwayFrame):
            frame.parse_body(view[9:9 + length])
            code = frame.error_code
        view = view[9 + length:]
    return code


def tls_context(cafile: str, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(alpn)
    return context


MAX_CONCURRENT_STREAMS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
INITIAL_WINDOW_SIZE = h2.settings.SettingCodes.INITIAL_WINDOW_SIZE
MAX_HEADER_LIST_SIZE = h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE
