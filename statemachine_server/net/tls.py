"""TLS settings for servers, built once from certificate files."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable

__all__ = ["AfterHandshake", "server_ssl_context"]

StrPath = str | os.PathLike[str]


def server_ssl_context(
    certfile: StrPath,
    keyfile: StrPath | None = None,
    *,
    password: str | None = None,
    client_ca: StrPath | None = None,
) -> ssl.SSLContext:
    """An :class:`ssl.SSLContext` for a server, with the standard library's safe defaults.

    Args:
        certfile: PEM file with the server's certificate (and its chain, if any);
            it may hold the private key too.
        keyfile: PEM file with the private key, if not in ``certfile``.
        password: the private key's password, if it is encrypted.
        client_ca: PEM file of authorities whose client certificates are required:
            given, a client without a certificate they signed is refused.

    TLS 1.2 is the oldest version accepted (RFC 8996 deprecates 1.0 and 1.1).

    Raises:
        OSError: a file cannot be read.
        ssl.SSLError: the certificate and key do not load or do not match.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile, password)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class AfterHandshake(asyncio.Protocol):
    """Stands in for a connection until its transport is ready, then steps aside.

    With TLS, asyncio makes the protocol before the handshake, and never tells it
    if the handshake fails: a :class:`Connection` made then would stay registered
    with the kernel forever. This stand-in makes it only in ``connection_made``,
    and hands it the transport (``set_protocol``), so data goes to it directly.
    ``done(transport)``, if given, hears first that the handshake is over.
    """

    __slots__ = ("done", "make")

    def __init__(
        self,
        make: Callable[[], asyncio.Protocol],
        done: Callable[[asyncio.BaseTransport], object] | None = None,
    ):
        self.make = make
        self.done = done

    @classmethod
    def factory(
        cls,
        make: Callable[[], asyncio.Protocol],
        done: Callable[[asyncio.BaseTransport], object] | None = None,
    ) -> Callable[[], asyncio.Protocol]:
        return lambda: cls(make, done)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.done is not None:
            self.done(transport)
        protocol = self.make()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
