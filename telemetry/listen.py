"""A listening TCP socket on ``host:port``, or one line saying why not: the one bind of the
servers cliffwatch starts (``cliffwatch serve``'s receiver binds with it; ``cliffwatch
dashboard`` checks with it that Streamlit will be able to, before announcing its URL)."""

from __future__ import annotations

import socket

from cliffwatch.errors import CliffwatchError


class ListenError(CliffwatchError):
    """The host does not resolve, or the address cannot be bound (a port in use)."""


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6 by what the host resolves to;
    ``SO_REUSEADDR``, as Tornado and so Streamlit bind, so a restart right after a stop does
    not fail on TIME_WAIT sockets). The caller closes it.

    Args:
        host: an interface name or address (``127.0.0.1``, ``::1``, ``0.0.0.0``, ``localhost``).
        port: the TCP port; 0 for any free one.

    Raises:
        ListenError: ``cannot listen on HOST:PORT: REASON`` (``Address already in use``, a
            host that does not resolve...).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, OverflowError, UnicodeError) as exc:
        raise ListenError(
            f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
