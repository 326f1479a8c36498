"""Principals: ``User:NAME``, from a login or from a client certificate.

Every door names the client the same way Kafka does — ``User:alice`` — whichever way it
proved who it is: a SASL exchange or a plain password (user store), a JWT (the claim named
by ``oauth_principal_claim``), or a TLS client certificate.  A certificate's subject (RFC 2253:
``CN=alice,OU=eng,O=Example``) becomes a user name through rules written as Kafka's
``ssl.principal.mapping.rules``: ``RULE:pattern/replacement/[LU]``, tried in order, the first
whose pattern matches the whole subject wins (``$1`` … in the replacement are its groups, a
trailing ``L``/``U`` lower- or upper-cases the result), ``DEFAULT`` is the subject itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509

from bayou.errors import InvalidConfig

USER = "User:"
ANONYMOUS = "User:ANONYMOUS"

_RULE = re.compile(r"\s*(?:(DEFAULT)|RULE:((?:\\/|[^/])*)/((?:\\/|[^/])*)/([LU]?))\s*(?:,|$)")


def user_principal(name: str) -> str:
    return USER + name


@dataclass(frozen=True)
class MappingRule:
    pattern: re.Pattern[str] | None  # None: DEFAULT
    replacement: str = ""
    case: str = ""

    def apply(self, subject: str) -> str | None:
        if self.pattern is None:
            return subject
        m = self.pattern.fullmatch(subject)
        if m is None:
            return None
        out = m.expand(self.replacement)
        return out.lower() if self.case == "L" else out.upper() if self.case == "U" else out


def parse_rules(text: str) -> tuple[MappingRule, ...]:
    """Kafka's rule syntax (see the module docstring); InvalidConfig when malformed."""
    rules: list[MappingRule] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        m = _RULE.match(text, pos)
        if m is None or m.end() == pos:
            raise InvalidConfig(
                f"tls_principal_mapping_rules: cannot parse {text[pos:]!r} "
                "(expected RULE:pattern/replacement/[LU] or DEFAULT, comma-separated)"
            )
        pos = m.end()
        if m.group(1):
            rules.append(MappingRule(None))
            continue
        try:
            pattern = re.compile(m.group(2).replace("\\/", "/"))
        except re.error as exc:
            raise InvalidConfig(f"tls_principal_mapping_rules: bad pattern: {exc}") from None
        replacement = re.sub(r"\$(\d+)", r"\\g<\1>", m.group(3).replace("\\/", "/"))
        rules.append(MappingRule(pattern, replacement, m.group(4)))
    return tuple(rules) or (MappingRule(None),)


def certificate_subject(der: bytes) -> str:
    """The subject of a DER certificate as RFC 2253 text (``CN=alice,O=Example``)."""
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


def map_subject(rules: tuple[MappingRule, ...], subject: str) -> str | None:
    for rule in rules:
        name = rule.apply(subject)
        if name is not None:
            return name
    return None
