"""A loopback TCP proxy the fault tests control: forward, drop, stall, half-open, refuse, cut-on-bytes.

    with Proxy("127.0.0.1", server_port) as px:
        dsn = f"postgresql://postgres@127.0.0.1:{px.port}/db"   # clients connect to the proxy
        px.drop()            # close every current connection (both sides): clients see EOF
        px.stall()           # stop forwarding in both directions, sockets stay open (new ones too)
        px.resume()          # forward again (what the peers sent meanwhile flows on)
        px.half_open()       # close the server side only; the client side stays open and silent:
                             # its writes are read and discarded, it never hears anything again
        px.refuse(True)      # new connections are accepted and closed at once (server unreachable)
        px.cut_on(b"COMMIT") # the next client→server chunk containing b"COMMIT" is forwarded, then
                             # that connection is closed (FIN: the server still reads and executes
                             # it) before any reply can come back

Every connection is a pair of sockets with one pump thread per direction; a pump that may not
forward (stalled) simply does not read, so TCP flow control holds the peer as a stalled network
would.  Plain library: no pytest dependency.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Optional

__all__ = ["Proxy"]

_POLL = 0.05


class _Pair:
    """One proxied connection: client socket ↔ upstream socket."""

    def __init__(self, proxy: Proxy, client: socket.socket, upstream: Optional[socket.socket], stalled: bool):
        self.proxy, self.client, self.upstream = proxy, client, upstream
        self.stalled = stalled
        self.closed = False
        self.half_open = False  # upstream gone, client kept silent
        self.lock = threading.Lock()

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for name, fn in (("c2s", self._client_to_server), ("s2c", self._server_to_client)):
            threading.Thread(target=fn, name=f"proxy-{name}", daemon=True).start()

    def close(self, rst: bool = False) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.client, self.upstream):
            _close(s, rst)
        self.proxy._forget(self)

    def make_half_open(self) -> None:
        """Close the server side; keep the client connected but deaf and mute."""
        with self.lock:
            if self.closed:
                return
            self.half_open, self.stalled = True, False
            up, self.upstream = self.upstream, None
        _close(up, rst=False)

    # ------------------------------------------------------------ pumps
    def _ensure_upstream(self) -> bool:
        """Connect upstream lazily (a connection accepted while stalled connects on resume)."""
        if self.upstream is not None:
            return True
        if self.half_open:
            return False
        try:
            self.upstream = socket.create_connection(self.proxy.upstream_addr, timeout=10)
            self.upstream.settimeout(None)
            self.upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return True
        except OSError:
            self.close()
            return False

    def _client_to_server(self) -> None:
        try:
            while not self.closed:
                if self.stalled:
                    time.sleep(_POLL)
                    continue
                if not self.half_open and not self._ensure_upstream():
                    return
                r, _, _ = select.select([self.client], [], [], _POLL)
                if not r or self.stalled or self.closed:
                    continue
                data = self.client.recv(65536)
                if not data:
                    self.close()
                    return
                if self.half_open:
                    continue  # swallowed: the client believes it was sent
                try:
                    self.upstream.sendall(data)
                except (OSError, AttributeError):
                    if self.half_open:
                        continue  # made half-open meanwhile
                    raise
                self.proxy.bytes_up += len(data)
                pattern = self.proxy._cut_pattern
                if pattern is not None and pattern in data:
                    self.proxy._cut_pattern = None
                    self.proxy.cuts += 1
                    self.close()  # FIN after the bytes: the server acts on them, its answer is lost
                    return
        except (OSError, AttributeError):
            self.close()

    def _server_to_client(self) -> None:
        try:
            while not self.closed:
                if self.stalled or self.half_open or self.upstream is None:
                    if self.half_open:
                        return  # nothing will ever come back
                    time.sleep(_POLL)
                    continue
                up = self.upstream
                r, _, _ = select.select([up], [], [], _POLL)
                if not r or self.stalled or self.closed or self.half_open:
                    continue
                data = up.recv(65536)
                if not data:
                    if self.half_open:
                        return
                    self.close()
                    return
                self.client.sendall(data)
                self.proxy.bytes_down += len(data)
        except (OSError, AttributeError):
            if not self.half_open:
                self.close()


def _close(s: Optional[socket.socket], rst: bool) -> None:
    if s is None:
        return
    try:
        if rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        else:
            s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


class Proxy:
    """Listens on 127.0.0.1:<free port> and forwards every connection to ``host:port``."""

    def __init__(self, host: str, port: int, listen_host: str = "127.0.0.1"):
        self.upstream_addr = (host, port)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((listen_host, 0))
        self._sock.listen(128)
        self.host, self.port = listen_host, self._sock.getsockname()[1]
        self._pairs: set[_Pair] = set()
        self._lock = threading.Lock()
        self._stalled = False
        self._refusing = False
        self._cut_pattern: Optional[bytes] = None
        self._stop = threading.Event()
        self.accepted = self.refused = self.cuts = 0
        self.bytes_up = self.bytes_down = 0
        self._thread = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ control
    @property
    def connections(self) -> int:
        """Connections currently open (half-open ones included)."""
        with self._lock:
            return len(self._pairs)

    def drop(self, rst: bool = False) -> int:
        """Close every current connection on both sides; returns how many were closed."""
        pairs = self._snapshot()
        for p in pairs:
            p.close(rst)
        return len(pairs)

    def stall(self) -> None:
        """Stop forwarding on every connection, current and new, without closing anything."""
        with self._lock:
            self._stalled = True
            for p in self._pairs:
                p.stalled = True

    def resume(self) -> None:
        with self._lock:
            self._stalled = False
            for p in self._pairs:
                p.stalled = False

    def half_open(self) -> int:
        """Close the server side of every current connection, leaving the client side open and
        silent (a NAT or firewall that forgot the connection); new connections work normally."""
        pairs = self._snapshot()
        for p in pairs:
            p.make_half_open()
        return len(pairs)

    def refuse(self, on: bool = True) -> None:
        """While on, new connections are accepted and closed at once."""
        self._refusing = on

    def cut_on(self, pattern: bytes) -> None:
        """Arm a one-shot cut: the next client→server chunk containing ``pattern`` is forwarded,
        then its connection is closed on both sides before the server's answer can come back."""
        self._cut_pattern = pattern

    def close(self) -> None:
        self._stop.set()
        try:
            self._sock.close()
        except OSError:
            pass
        self.drop()
        self._thread.join(timeout=2)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ internals
    def _snapshot(self) -> list[_Pair]:
        with self._lock:
            return list(self._pairs)

    def _forget(self, pair: _Pair) -> None:
        with self._lock:
            self._pairs.discard(pair)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self._sock], [], [], _POLL)
                if not r:
                    continue
                client, _ = self._sock.accept()
            except OSError:
                return
            if self._refusing:
                self.refused += 1
                _close(client, rst=False)
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                stalled = self._stalled
            upstream = None
            if not stalled:
                try:
                    upstream = socket.create_connection(self.upstream_addr, timeout=10)
                    upstream.settimeout(None)
                    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    _close(client, rst=False)  # the server is down: so is the proxy's answer
                    continue
            pair = _Pair(self, client, upstream, stalled)
            with self._lock:
                self._pairs.add(pair)
            self.accepted += 1
            pair.start()
