"""TLS settings for servers, built once from certificate files."""

from __future__ import annotations

import os
import ssl

__all__ = ["server_ssl_context"]

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
