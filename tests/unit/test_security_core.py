"""The security core without a broker: SCRAM (RFC 7677's example), Kafka's authorizer
semantics, certificate-subject mapping rules, login delays."""

from __future__ import annotations

import asyncio
import base64

import pytest

from bayou.core.security.acl import (
    AclBinding,
    AclFilter,
    AclOperation,
    PatternType,
    Permission,
    ResourceType,
)
from bayou.core.security.acl_store import AclStore
from bayou.core.security.authorizer import Authorizer
from bayou.core.security.login_delays import LoginDelays
from bayou.core.security.principal import map_subject, parse_rules
from bayou.core.security.scram import (
    SHA_256,
    ScramError,
    ScramServer,
    credential_from_salted,
    salted_password,
)
from bayou.errors import InvalidConfig

Op, RT, PT, P = AclOperation, ResourceType, PatternType, Permission


def test_scram_sha_256_rfc_7677_example() -> None:
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    cred = credential_from_salted(
        SHA_256, salt, salted_password(SHA_256, b"pencil", salt, 4096), 4096
    )
    assert cred.check_password(b"pencil") and not cred.check_password(b"pencil2")
    server = ScramServer(SHA_256)
    server.first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", lambda user: cred if user == "user" else None)
    # the RFC's server nonce instead of a random one, to check the arithmetic
    server._nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    server._server_first = f"r={server._nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    final = server.final(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert final == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_scram_unknown_user_fails_only_at_the_proof_and_bad_input_is_refused() -> None:
    server = ScramServer(SHA_256)
    first = server.first(b"n,,n=ghost,r=abc", lambda _user: None)
    assert first.startswith(b"r=abc") and b",s=" in first and first.endswith(b",i=4096")
    nonce = first.split(b",")[0][2:]
    with pytest.raises(ScramError):
        server.final(b"c=biws,r=" + nonce + b",p=" + base64.b64encode(b"x" * 32))
    for bad in (b"", b"x" * 5000, b"n,,r=abc", b"\xff\xfe", b"q,,n=a,r=b"):
        with pytest.raises(ScramError):
            ScramServer(SHA_256).first(bad, lambda _user: None)


def acl(
    principal: str,
    op: AclOperation,
    name: str,
    pattern: PatternType = PT.LITERAL,
    permission: Permission = P.ALLOW,
    rtype: ResourceType = RT.TOPIC,
) -> AclBinding:
    return AclBinding(rtype, name, pattern, principal, "*", op, permission)


def authorizer(*bindings: AclBinding, supers: frozenset[str] = frozenset()) -> Authorizer:
    store = AclStore()
    store.bindings.update(bindings)
    store.version += 1
    return Authorizer(store, enabled=True, super_users=supers)


def test_authorizer_follows_kafkas_rules() -> None:
    a = authorizer(
        acl("User:alice", Op.READ, "orders"),
        acl("User:alice", Op.WRITE, "logs-", PT.PREFIXED),
        acl("User:*", Op.DESCRIBE, "public"),
        acl("User:alice", Op.ALL, "secret-", PT.PREFIXED),
        acl("User:alice", Op.READ, "secret-x", permission=P.DENY),
        acl("User:bob", Op.ALTER_CONFIGS, "orders"),
        supers=frozenset({"User:admin"}),
    )
    ok = a.authorize
    assert ok("User:alice", "h", Op.READ, RT.TOPIC, "orders")
    assert ok("User:alice", "h", Op.DESCRIBE, RT.TOPIC, "orders")  # implied by READ
    assert not ok("User:alice", "h", Op.WRITE, RT.TOPIC, "orders")
    assert ok("User:alice", "h", Op.WRITE, RT.TOPIC, "logs-app")  # prefixed
    assert ok("User:alice", "h", Op.DESCRIBE, RT.TOPIC, "logs-app")
    assert not ok("User:alice", "h", Op.WRITE, RT.TOPIC, "logs")
    assert ok("User:carol", "h", Op.DESCRIBE, RT.TOPIC, "public")  # User:*
    assert not ok("User:carol", "h", Op.READ, RT.TOPIC, "public")
    assert ok("User:alice", "h", Op.READ, RT.TOPIC, "secret-y")
    assert not ok("User:alice", "h", Op.READ, RT.TOPIC, "secret-x")  # deny beats allow
    assert ok("User:bob", "h", Op.DESCRIBE_CONFIGS, RT.TOPIC, "orders")  # implied
    assert not ok("User:bob", "h", Op.READ, RT.TOPIC, "nothing-here")  # no ACL: no
    assert ok("User:admin", "h", Op.DELETE, RT.TOPIC, "anything")  # super user
    assert a.operations("User:alice", "h", RT.TOPIC, "orders") == {Op.READ, Op.DESCRIBE}
    assert a.authorize_any("User:alice", "h", Op.WRITE, RT.TOPIC)
    assert not a.authorize_any("User:carol", "h", Op.WRITE, RT.TOPIC)


def test_revoking_an_acl_changes_the_next_answer() -> None:
    binding = acl("User:alice", Op.READ, "orders")
    a = authorizer(binding)
    assert a.authorize("User:alice", "h", Op.READ, RT.TOPIC, "orders")
    a.acls.bindings.discard(binding)
    a.acls.version += 1
    assert not a.authorize("User:alice", "h", Op.READ, RT.TOPIC, "orders")


def test_acl_filters_match_as_kafkas() -> None:
    lit, pre = acl("User:a", Op.READ, "orders"), acl("User:a", Op.READ, "ord", PT.PREFIXED)
    wild = acl("User:b", Op.WRITE, "*")
    match = AclFilter(RT.TOPIC, "orders", PT.MATCH)
    assert [match.matches(b) for b in (lit, pre, wild)] == [True, True, True]
    assert [AclFilter(RT.TOPIC, "orders", PT.ANY).matches(b) for b in (lit, pre)] == [True, False]
    assert AclFilter(principal="User:b").matches(wild) and not AclFilter(
        principal="User:b"
    ).matches(lit)
    assert acl("User:a", Op.IDEMPOTENT_WRITE, "t").problem() is not None
    assert AclBinding.from_key(pre.key()) == pre


def test_certificate_subject_mapping_rules() -> None:
    rules = parse_rules("RULE:^CN=([^,]+),OU=eng,.*$/$1/L, RULE:^CN=(.*?),.*$/$1@ext/, DEFAULT")
    assert map_subject(rules, "CN=Alice,OU=eng,O=Example") == "alice"
    assert map_subject(rules, "CN=Bob,OU=ops,O=Example") == "Bob@ext"
    assert map_subject(rules, "O=Example") == "O=Example"
    with pytest.raises(InvalidConfig):
        parse_rules("RULE:broken")


def test_login_delays_grow_per_address_and_reset() -> None:
    delays = LoginDelays(100)
    assert [delays.failed("a") for _ in range(4)] == [0.1, 0.2, 0.4, 0.8]
    assert delays.failed("b") == 0.1
    delays.succeeded("a")
    assert delays.failed("a") == 0.1
    assert max(delays.failed("c") for _ in range(30)) == 5.0


def test_the_internal_user_logs_in_only_with_the_engines_secret() -> None:
    from bayou.core.security import INTERNAL_USER, Security, SecuritySettings
    from bayou.core.security.scram import SHA_512, make_credential
    from bayou.storage.memory import MemoryEngine

    async def scenario() -> None:
        state = MemoryEngine().state
        first = Security(SecuritySettings(authorizer=True))
        await first.open(state)
        secret = first.internal_secret
        assert len(secret) >= 32
        config = first.internal_client_config()
        assert (config["sasl.username"], config["sasl.password"]) == (INTERNAL_USER, secret)
        login = first.password_login("kafka", "h", INTERNAL_USER, secret.encode())
        assert login.principal == f"User:{INTERNAL_USER}"
        assert first.authorizer.is_super(login.principal)
        assert first.password_login("kafka", "h", INTERNAL_USER, b"guess").principal is None
        # a stored user of that name cannot log in with its own password, nor by SCRAM
        await first.users.upsert(INTERNAL_USER, make_credential(SHA_512, b"mine"))
        assert first.password_login("kafka", "h", INTERNAL_USER, b"mine").principal is None
        assert first.users.credential(INTERNAL_USER, SHA_512) is None
        # another broker on the same engine reads the same secret
        second = Security(SecuritySettings(authorizer=True))
        await second.open(state)
        assert second.internal_secret == secret
        # without logins required there is nothing to add
        assert Security().internal_client_config() == {}

    asyncio.run(scenario())


def test_only_the_brokers_login_takes_a_brokers_part_by_client_id() -> None:
    """A forwarded request (relayed share sessions, a door member's reads of every
    partition, group configs beyond Kafka's ranges) is recognised by a reserved client id;
    with logins required, only a connection logged in as the internal user is believed."""
    from bayou.core.forwarding import FORWARDED_CLIENT_ID, SHARE_READER_CLIENT_ID
    from bayou.core.security import INTERNAL_USER, Security, SecuritySettings
    from bayou.gateways.kafka.session import ClientSession

    secured = Security(SecuritySettings(authorizer=True))
    alice = ClientSession(secured, "h", tls=False, cert=None)
    alice.principal = "User:alice"
    assert not alice.from_broker(FORWARDED_CLIENT_ID)
    assert not alice.from_broker(SHARE_READER_CLIENT_ID)
    broker = ClientSession(secured, "h", tls=False, cert=None)
    broker.principal = f"User:{INTERNAL_USER}"
    assert broker.from_broker(FORWARDED_CLIENT_ID)
    assert broker.from_broker(SHARE_READER_CLIENT_ID)
    assert not broker.from_broker("rdkafka")
    open_broker = ClientSession(Security(), "h", tls=False, cert=None)
    assert open_broker.from_broker(FORWARDED_CLIENT_ID)
    assert not open_broker.from_broker("rdkafka")
