"""Test certificates, JWTs and a secured broker (TLS on every door, ``--authorizer acl``).

Certificates are made here with ``cryptography`` (a CA, a server certificate for
127.0.0.1/localhost, client certificates); JWTs are signed with an RSA key whose public half
is written as a JWKS file.  ``SecureBroker`` creates its users offline (``bayou user add
--data-dir``, as an operator would before the first start) and then starts ``bayou serve``
with TLS ports for every door.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.broker import BrokerProcess, wait_for_port
from tests.support.ports import free_port

ISSUER = "https://issuer.test"
AUDIENCE = "bayou"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


class Pki:
    """A CA in ``directory`` that signs server and client certificates."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca_key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bayou test CA")])
        now = dt.datetime.now(dt.UTC)
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, common_name: str, *, server: bool) -> tuple[Path, Path, int]:
        """(certificate path, key path, serial number)."""
        key = _key()
        now = dt.datetime.now(dt.UTC)
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [  # as openssl writes /O=…/CN=…: RFC 2253 text "CN=…,O=…"
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bayou tests"),
                        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    ]
                )
            )
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.ca_key, hashes.SHA256())
        cert_path, key_path = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
        return cert_path, key_path, serial


class Tokens:
    """An RSA signing key and its JWKS file."""

    def __init__(self, directory: Path) -> None:
        self.key = _key()
        self.kid = "test-key-1"
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        public.update({"kid": self.kid, "alg": "RS256", "use": "sig"})
        self.jwks_path = directory / "jwks.json"
        self.jwks_path.write_text(json.dumps({"keys": [public]}))

    def token(self, subject: str, *, lifetime_s: int = 3600, audience: str = AUDIENCE) -> str:
        now = int(time.time())
        claims = {"sub": subject, "iss": ISSUER, "aud": audience, "iat": now}
        claims["exp"] = now + lifetime_s
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})


def sasl(bootstrap: str, user: str, password: str, **extra: Any) -> dict[str, Any]:
    """A librdkafka config logging in as ``user`` with SCRAM-SHA-512 over plain TCP."""
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
        **extra,
    }


def bayou_cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "bayou", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


class SecureBroker(BrokerProcess):
    """A broker with TLS on every door and ``--authorizer acl``; ``admin`` is a super user."""

    def __init__(self, directory: Path, users: dict[str, str], extra: list[str] | None = None):
        directory.mkdir(parents=True, exist_ok=True)
        self.pki = Pki(directory)
        self.cert, self.key, self.serial = self.pki.issue("server", "localhost", server=True)
        self.tokens = Tokens(directory)
        self.kafka_tls_port = free_port()
        self.http_tls_port = free_port()
        self.mqtt_tls_port = free_port()
        self.amqp_tls_port = free_port()
        data = directory / "data"
        data.mkdir()
        for name, password in users.items():
            done = bayou_cli("user", "add", name, "--password-stdin", "--data-dir", str(data),
                             stdin=password + "\n")  # fmt: skip
            assert done.returncode == 0, done.stderr
        super().__init__(
            data,
            extra_args=[
                "--tls-cert", str(self.cert), "--tls-key", str(self.key),
                "--tls-client-ca", str(self.pki.ca_path),
                "--kafka-tls-port", str(self.kafka_tls_port),
                "--http-tls-port", str(self.http_tls_port),
                "--mqtt-tls-port", str(self.mqtt_tls_port),
                "--amqp-tls-port", str(self.amqp_tls_port),
                "--authorizer", "acl", "--super-user", "admin",
                "--oauth-jwks-file", str(self.tokens.jwks_path),
                "--oauth-issuer", ISSUER, "--oauth-audience", AUDIENCE,
                "--connection-failed-authentication-delay-ms", "100",
                "--tls-principal-mapping-rules", "RULE:^CN=([^,]+),.*$/$1/L,DEFAULT",
                *(extra or []),
            ],
        )  # fmt: skip

    def start(self) -> SecureBroker:
        super().start()
        for port in (self.kafka_tls_port, self.http_tls_port, self.mqtt_tls_port):
            wait_for_port(self.host, port, self.proc, 30)
        wait_for_port(self.host, self.amqp_tls_port, self.proc, 30)
        return self

    @property
    def tls_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_tls_port}"

    def kafka_config(self, user: str, password: str, **extra: object) -> dict[str, object]:
        """confluent-kafka settings: SCRAM-SHA-512 over TLS."""
        return {
            "bootstrap.servers": self.tls_bootstrap,
            "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(self.pki.ca_path),
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": password,
            **extra,
        }
