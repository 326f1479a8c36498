"""The server TLS context every door's TLS listener shares, reloadable without a restart.

One ``ssl.SSLContext`` (TLS 1.2+) is made from ``--tls-cert``/``--tls-key`` and, with
``--tls-client-ca``, asks clients for a certificate signed by that CA (optional: a client
without one logs in by password or token).  ``reload`` (SIGHUP) first loads the files into
a fresh context — a bad file is reported and changes nothing — then into the live one:
OpenSSL copies the certificate into each connection when it starts, so connections already
open keep theirs and new ones get the new certificate; no listener is rebound and no
connection dropped.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from bayou.core.security.principal import certificate_subject


class TlsContext:
    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.context = self._make()

    def _make(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load(ctx)
        if self.client_ca is not None:
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def _load(self, ctx: ssl.SSLContext) -> None:
        try:
            ctx.load_cert_chain(self.cert, self.key)
            if self.client_ca is not None:
                ctx.load_verify_locations(cafile=self.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise OSError(f"cannot load the TLS certificate or key: {exc}") from None

    def reload(self) -> None:
        """Load the files again (see the module docstring); OSError when they are bad."""
        self._load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
        self._load(self.context)


def peer_subject(ssl_object: object) -> str | None:
    """The verified client certificate's subject, or None (no certificate, plain TCP)."""
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return certificate_subject(der) if der else None
