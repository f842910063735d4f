"""The token gateway (issue #5): PostgreSQL's `ldap` authentication delegates its password
check to Keyless, and the password is an access token.

Two layers, both with real parts:
- the LDAP endpoint itself, in-process, driven by ldap3's client and by raw sockets (bind DN
  format, result codes for everything it does not do, garbage, limits, LDAPS);
- end to end: a real Keyless server issuing tokens over HTTPS, `keyless gateway serve` as a
  subprocess, a real PostgreSQL 15 whose pg_hba.conf sends logins to it, and psycopg 3
  connecting with the token as the password.

Tokens are never printed: assertion messages name roles and results, not credentials.
"""

from __future__ import annotations

import json
import random
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import ldap3
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from ldap3.protocol import rfc4511
from psycopg import sql
from pyasn1.codec.ber import decoder, encoder
from pyasn1.error import SubstrateUnderrunError
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from keyless.authority import keys
from keyless.authority.bootstrap import initialise
from keyless.authority.config import DataDir, ServerConfig
from keyless.authority.context import Authority
from keyless.authority.directory import add_member, create_group, create_service_principal
from keyless.authority.masterkey import MasterKey
from keyless.authority.tokens import Principal, mint
from keyless.gateway import protocol
from keyless.gateway.mappings import MappingError, add_mapping, list_mappings, remove_mapping
from keyless.gateway.names import BindDnError, BindTarget, bind_dn, hba_line, parse_bind_dn
from keyless.gateway.settings import (
    GatewaySettings,
    GatewaySettingsError,
    Limits,
    server_tls_context,
)
from keyless.store import audit
from keyless.store.engine import open_engine
from keyless.store.models import AuditEvent, ResourceApi, Tenant
from tests.support.gateway import GatewayProcess, GatewayThread, world_readable
from tests.support.postgres import PostgresServer
from tests.support.server import KEYLESS, KeylessServer, clean_env, running_server

SERVER = "db1"
ROLE = "app_user"
GROUP_ROLE = "team_user"
POSTGRES_SCOPE = "api://keyless/postgres/.default"


# --- tokens and audit records -----------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    object_id: str
    app_id: str
    secret: str = ""


def mint_token(
    authority: Authority,
    tenant_id: str,
    who: Identity,
    resource: str = "postgres",
    now: float | None = None,
    issuer: str | None = None,
) -> str:
    """A token signed by the tenant's real active key, as the token endpoint would mint it;
    `now` in the past makes an expired one, `issuer` one from another authority."""
    snapshot = authority.cache.current()
    api = next(r for r in snapshot.resources[tenant_id].values() if r.name == resource)
    return mint(
        signer=authority.cache.signer(snapshot, tenant_id),
        issuer=issuer or authority.issuer(tenant_id),
        tenant=snapshot.tenants[tenant_id],
        principal=Principal(who.object_id, "app", who.app_id, {}),
        resource=api,
        auth_method="client_secret",
        now=now,
    ).access_token


def forge(token: str, kid: str | None = None, **claims: Any) -> str:
    """The same claims (and `kid`, unless given) signed with a fresh key nobody published."""
    payload = {**jwt.decode(token, options={"verify_signature": False}), **claims}
    header_kid = kid or jwt.get_unverified_header(token)["kid"]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": header_kid})


def last_audit_id(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.max(AuditEvent.id))) or 0)


def bind_records(engine: Engine, after: int) -> list[dict[str, Any]]:
    """Gateway bind records written after audit id `after`, oldest first."""
    with Session(engine) as session:
        records = audit.query(session, action="gateway.bind", limit=1000)
    return sorted((r for r in records if r["id"] > after), key=lambda r: r["id"])


def assert_no_token(records: list[dict[str, Any]], *tokens: str) -> None:
    text = json.dumps(records)
    for token in tokens:
        if token:
            assert token not in text, "an audit record contains the token"
            parts = token.split(".")
            if len(parts) == 3:
                assert parts[2] not in text, "an audit record contains a token's signature"


# --- raw LDAP over a socket --------------------------------------------------------------------


def ldap_message(message_id: int, op_name: str, op: Any, controls: Any = None) -> bytes:
    choice = rfc4511.ProtocolOp()
    choice.setComponentByName(op_name, op)
    message = rfc4511.LDAPMessage()
    message["messageID"] = rfc4511.MessageID(message_id)
    message["protocolOp"] = choice
    if controls is not None:
        message["controls"] = controls
    return bytes(encoder.encode(message))


def bind_request(
    dn: str | bytes,
    password: bytes,
    message_id: int = 1,
    version: int = 3,
    controls: Any = None,
) -> bytes:
    request = rfc4511.BindRequest()
    request["version"] = rfc4511.Version(version)
    request["name"] = rfc4511.LDAPDN(dn)
    request["authentication"] = rfc4511.AuthenticationChoice().setComponentByName(
        "simple", rfc4511.Simple(password)
    )
    return ldap_message(message_id, "bindRequest", request, controls)


def critical_control(oid: str) -> Any:
    control = rfc4511.Control()
    control["controlType"] = rfc4511.LDAPOID(oid)
    control["criticality"] = rfc4511.Criticality(True)
    controls = rfc4511.Controls()
    controls.setComponentByPosition(0, control)
    return controls


def extended_request(oid: str, message_id: int = 1) -> bytes:
    request = rfc4511.ExtendedRequest()
    request["requestName"] = rfc4511.RequestName(oid)
    return ldap_message(message_id, "extendedReq", request)


@dataclass(frozen=True)
class Reply:
    message_id: int
    op: str
    code: int
    diagnostic: str
    response_name: str = ""


class RawClient:
    """A bare LDAP client: bytes out, messages decoded with pyasn1 back."""

    def __init__(self, port: int, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def reply(self) -> Reply | None:
        """The next message, or None once the server has closed the connection."""
        while True:
            if self.buffer:
                try:
                    message, self.buffer = decoder.decode(
                        self.buffer, asn1Spec=rfc4511.LDAPMessage()
                    )
                except SubstrateUnderrunError:
                    pass
                else:
                    op = message["protocolOp"]
                    result = op.getComponent()
                    name = ""
                    if op.getName() == "extendedResp" and result["responseName"].hasValue():
                        name = str(result["responseName"])
                    return Reply(
                        int(message["messageID"]),
                        str(op.getName()),
                        int(result["resultCode"]),
                        str(result["diagnosticMessage"]),
                        name,
                    )
            if not self._fill():
                assert not self.buffer, "the server closed the connection mid-message"
                return None

    def closed(self) -> bool:
        return self.reply() is None

    def close(self) -> None:
        self.sock.close()


def ldap3_connection(
    port: int, dn: str | None = None, password: str | None = None, ca_file: Path | None = None
) -> ldap3.Connection:
    server = ldap3.Server(
        "127.0.0.1",
        port=port,
        get_info=ldap3.NONE,  # no root DSE or schema search after the bind
        use_ssl=ca_file is not None,
        tls=ldap3.Tls(ca_certs_file=str(ca_file), validate=ssl.CERT_REQUIRED) if ca_file else None,
        connect_timeout=10,
    )
    return ldap3.Connection(server, user=dn, password=password, receive_timeout=10)


def ldap3_bind(port: int, dn: str, password: str, ca_file: Path | None = None) -> dict[str, Any]:
    connection = ldap3_connection(port, dn, password, ca_file)
    try:
        connection.bind()
        return dict(connection.result)
    finally:
        connection.unbind()


# --- the LDAP endpoint, in process ------------------------------------------------------------


@dataclass
class Directory:
    data_dir: Path
    engine: Engine
    master: MasterKey
    authority: Authority
    tenant_id: str
    alice: Identity  # ROLE belongs to her
    bob: Identity  # in the group GROUP_ROLE belongs to
    group_id: str

    def token(self, who: Identity | None = None, **kwargs: Any) -> str:
        return mint_token(self.authority, self.tenant_id, who or self.alice, **kwargs)


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:
    data_dir = tmp_path_factory.mktemp("gateway-unit") / "data"
    report = initialise(data_dir)
    paths = DataDir(data_dir)
    config = ServerConfig.load_or_default(paths)
    engine = open_engine(config.effective_store_url(paths))
    master = MasterKey.load(paths.master_key)
    authority = Authority.create(engine, master, config.endpoint(), [])
    tenant = report.tenant_id
    with Session(engine) as session, session.begin():
        alice = create_service_principal(session, tenant, "gw-alice")
        bob = create_service_principal(session, tenant, "gw-bob")
        group = create_group(session, tenant, "gw-team")
        session.flush()
        add_member(session, tenant, group.object_id, bob.object_id)
        add_mapping(session, tenant, SERVER, ROLE, alice.object_id, "test")
        add_mapping(session, tenant, SERVER, GROUP_ROLE, group.object_id, "test")
        ids = (alice.object_id, alice.app_id, bob.object_id, bob.app_id, group.object_id)
    try:
        yield Directory(
            data_dir,
            engine,
            master,
            authority,
            tenant,
            Identity(ids[0], ids[1]),
            Identity(ids[2], ids[3]),
            ids[4],
        )
    finally:
        authority.issuer_keys.close()
        engine.dispose()


@pytest.fixture(scope="module")
def gateway(directory: Directory) -> Iterator[GatewayThread]:
    with GatewayThread(directory.authority, GatewaySettings(port=0)) as running:
        yield running


def test_bind_dn_is_role_and_server_and_nothing_else() -> None:
    assert parse_bind_dn("cn=app_user,ou=db1,dc=keyless") == BindTarget("app_user", "db1")
    # Attribute names and `keyless` in any case; the server name is compared lower-case, the
    # role name exactly (PostgreSQL role names are case-sensitive).
    assert parse_bind_dn("CN=App.User@x,OU=DB-1,DC=Keyless") == BindTarget("App.User@x", "db-1")
    assert bind_dn("app_user", "DB1") == "cn=app_user,ou=db1,dc=keyless"
    for bad in (
        "cn=app_user,ou=other,ou=db1,dc=keyless",  # a role name with ",ou=..." in it
        "cn=app_user+ou=other,ou=db1,dc=keyless",  # multi-valued RDN
        "uid=app_user,ou=db1,dc=keyless",
        "cn=app_user,ou=db1,dc=example",
        "cn=app\\,user,ou=db1,dc=keyless",  # escapes are never part of a gateway role name
        "cn=app_user,ou=db_1,dc=keyless",  # not a server name
        "cn=app_user,ou=db1",
        "",
        "not a dn",
    ):
        with pytest.raises(BindDnError, match=r"bind DN|cannot be used"):
            parse_bind_dn(bad)


def test_pg_hba_line_makes_postgresql_bind_with_that_dn() -> None:
    assert hba_line("DB1", "127.0.0.1", 8389, tls=False) == (
        "host all all 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport=8389 "
        'ldapprefix="cn=" ldapsuffix=",ou=db1,dc=keyless"'
    )
    # Off loopback: the client's token travels to PostgreSQL over TLS (hostssl), and PostgreSQL
    # reaches the gateway with LDAPS.
    assert hba_line("db1", "gw.example", 8636, tls=True, address="10.0.0.0/8") == (
        "hostssl all all 10.0.0.0/8 ldap ldapserver=gw.example ldapport=8636 ldapscheme=ldaps "
        'ldapprefix="cn=" ldapsuffix=",ou=db1,dc=keyless"'
    )


def test_plain_ldap_is_refused_off_loopback(directory: Directory) -> None:
    for host in ("127.0.0.1", "::1", "localhost"):
        GatewaySettings(host=host).check()
    for host in ("0.0.0.0", "192.0.2.10", "gw.example"):
        with pytest.raises(GatewaySettingsError, match="without TLS"):
            GatewaySettings(host=host).check()
    tls = server_tls_context(directory.data_dir, directory.master)
    GatewaySettings(host="0.0.0.0", tls=tls).check()
    # The command says so too, and does not start.
    result = subprocess.run(
        [*KEYLESS, "gateway", "serve", "--host", "0.0.0.0", "--port", "0"],
        env=clean_env(directory.data_dir),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "without TLS" in result.stderr and "--tls" in result.stderr


def test_mapping_api_validates_audits_and_lists(directory: Directory) -> None:
    d = directory
    before = last_audit_id(d.engine)
    with Session(d.engine) as session, session.begin():
        mappings = {(m.server, m.role): m for m in list_mappings(session, d.tenant_id)}
        assert mappings[(SERVER, ROLE)].principal_id == d.alice.object_id
        assert mappings[(SERVER, ROLE)].principal_type == "ServicePrincipal"
        assert mappings[(SERVER, GROUP_ROLE)].principal_type == "Group"
        # Adding the same mapping again changes nothing.
        again = add_mapping(session, d.tenant_id, "DB1", ROLE, d.alice.object_id, "test")
        assert again.principal_id == d.alice.object_id
    bad_cases: list[tuple[str, str, str, int, str]] = [
        (SERVER, ROLE, d.bob.object_id, 409, "already belongs to another principal"),
        (SERVER, "new_role", str(uuid.uuid4()), 404, "no user, group, service principal"),
        (SERVER, "bad,role", d.bob.object_id, 400, "cannot be used with the token gateway"),
        ("db_1", "new_role", d.bob.object_id, 400, "server name"),
    ]
    for server, role, principal, status, message in bad_cases:
        with pytest.raises(MappingError, match=message) as caught, Session(d.engine) as session:
            add_mapping(session, d.tenant_id, server, role, principal, "test")
        assert caught.value.status == status
    with Session(d.engine) as session, session.begin():
        add_mapping(session, d.tenant_id, SERVER, "temp_user", d.bob.object_id, "tester")
    with Session(d.engine) as session, session.begin():
        assert [m.role for m in list_mappings(session, d.tenant_id, principal_id=d.bob.object_id)]
        removed = remove_mapping(session, d.tenant_id, SERVER, "temp_user", "tester")
        assert removed.principal_id == d.bob.object_id
    with pytest.raises(MappingError, match="no mapping") as missing, Session(d.engine) as session:
        remove_mapping(session, d.tenant_id, SERVER, "temp_user", "tester")
    assert missing.value.status == 404
    with Session(d.engine) as session:
        changes = [r for r in audit.query(session, action="gateway.mapping.*") if r["id"] > before]
    assert [(r["action"], r["target"], r["actor"]) for r in reversed(changes)] == [
        ("gateway.mapping.add", f"{SERVER}/temp_user", "tester"),
        ("gateway.mapping.remove", f"{SERVER}/temp_user", "tester"),
    ]


def test_ldap3_simple_bind_with_a_valid_token_is_granted_and_audited(
    directory: Directory, gateway: GatewayThread
) -> None:
    token = directory.token()
    before = last_audit_id(directory.engine)
    result = ldap3_bind(gateway.port, bind_dn(ROLE, SERVER), token)
    assert result["result"] == 0, result["message"]
    (record,) = bind_records(directory.engine, before)
    assert record["result"] == "granted"
    assert record["actor"] == directory.alice.object_id
    assert record["tenantId"] == directory.tenant_id
    assert record["target"] == f"{SERVER}/{ROLE}"
    details = record["details"]
    assert details["role"] == ROLE and details["server"] == SERVER
    assert details["transport"] == "ldap" and details["client"].startswith("127.0.0.1:")
    assert details["principalId"] == directory.alice.object_id
    assert details["tokenId"] == jwt.decode(token, options={"verify_signature": False})["jti"]
    assert_no_token([record], token)


def test_a_group_members_token_binds_as_the_groups_role(
    directory: Directory, gateway: GatewayThread
) -> None:
    before = last_audit_id(directory.engine)
    result = ldap3_bind(gateway.port, bind_dn(GROUP_ROLE, SERVER), directory.token(directory.bob))
    assert result["result"] == 0, result["message"]
    (record,) = bind_records(directory.engine, before)
    assert record["result"] == "granted"
    assert record["details"]["viaGroup"] == directory.group_id
    # Alice is not in the group.
    refused = ldap3_bind(gateway.port, bind_dn(GROUP_ROLE, SERVER), directory.token())
    assert refused["result"] == protocol.INVALID_CREDENTIALS


REFUSALS = {
    "expired": lambda d: (ROLE, d.token(now=time.time() - 7200)),
    "wrong_audience": lambda d: (ROLE, d.token(resource="management")),
    "principal_not_mapped": lambda d: (ROLE, d.token(d.bob)),
    "role_not_mapped": lambda d: ("nobody", d.token()),
    "bad_signature": lambda d: (ROLE, forge(d.token())),
    "unknown_key": lambda d: (ROLE, forge(d.token(), kid="not-a-published-key")),
    "unknown_tenant": lambda d: (ROLE, forge(d.token(), tid=str(uuid.uuid4()))),
    "wrong_issuer": lambda d: (ROLE, d.token(issuer="https://elsewhere.example/t/v2.0")),
    "not_a_jwt": lambda d: (ROLE, "not-a-token"),
    # iat 200 s ahead (nbf is iat - 300, so not the check that fires): beyond the 60 s skew.
    "issued_in_future": lambda d: (ROLE, d.token(now=time.time() + 200)),
    # Signed by the tenant's key, for a principal the tenant does not have (any more).
    "principal_deleted": lambda d: (
        ROLE,
        d.token(Identity(str(uuid.uuid4()), d.alice.app_id)),
    ),
}


@pytest.mark.parametrize("reason", list(REFUSALS))
def test_bad_tokens_get_invalid_credentials_with_an_audited_reason(
    directory: Directory, gateway: GatewayThread, reason: str
) -> None:
    role, token = REFUSALS[reason](directory)
    before = last_audit_id(directory.engine)
    result = ldap3_bind(gateway.port, bind_dn(role, SERVER), token)
    assert result["result"] == protocol.INVALID_CREDENTIALS
    assert result["message"] and token not in result["message"]
    (record,) = bind_records(directory.engine, before)
    assert record["result"] == reason
    assert record["details"]["role"] == role and record["details"]["server"] == SERVER
    assert record["details"]["reason"]
    # Refusals about a mapped role are the server's tenant's to read.
    assert record["tenantId"] == directory.tenant_id
    assert_no_token([record], token)


def test_a_removed_mapping_refuses_the_very_next_bind(
    directory: Directory, gateway: GatewayThread
) -> None:
    d = directory
    with Session(d.engine) as session, session.begin():
        add_mapping(session, d.tenant_id, SERVER, "short_lived", d.alice.object_id, "test")
    assert ldap3_bind(gateway.port, bind_dn("short_lived", SERVER), d.token())["result"] == 0
    with Session(d.engine) as session, session.begin():
        remove_mapping(session, d.tenant_id, SERVER, "short_lived", "test")
    before = last_audit_id(d.engine)
    result = ldap3_bind(gateway.port, bind_dn("short_lived", SERVER), d.token())
    assert result["result"] == protocol.INVALID_CREDENTIALS
    assert [r["result"] for r in bind_records(d.engine, before)] == ["role_not_mapped"]


def test_binds_other_than_simple_binds_with_a_token_get_their_result_codes(
    directory: Directory, gateway: GatewayThread
) -> None:
    before = last_audit_id(directory.engine)
    anonymous = ldap3_connection(gateway.port)
    try:
        assert not anonymous.bind()
        assert anonymous.result["result"] == protocol.INAPPROPRIATE_AUTHENTICATION
    finally:
        anonymous.unbind()
    sasl = ldap3.Connection(
        ldap3.Server("127.0.0.1", port=gateway.port, get_info=ldap3.NONE),
        authentication=ldap3.SASL,
        sasl_mechanism=ldap3.EXTERNAL,
        receive_timeout=10,
    )
    try:
        assert not sasl.bind()
        assert sasl.result["result"] == protocol.AUTH_METHOD_NOT_SUPPORTED
    finally:
        sasl.unbind()
    dn = bind_dn(ROLE, SERVER)
    token = directory.token().encode()
    cases: list[tuple[dict[str, Any], int]] = [
        # RFC 4513 5.1.2: a name without a password is not anonymous: unwillingToPerform.
        ({"dn": dn, "password": b""}, protocol.UNWILLING_TO_PERFORM),
        ({"dn": dn, "password": token, "version": 2}, protocol.PROTOCOL_ERROR),
        (
            {"dn": dn, "password": token, "controls": critical_control("1.2.3.4.5")},
            protocol.UNAVAILABLE_CRITICAL_EXTENSION,
        ),
        ({"dn": b"cn=\xff\xfe,ou=db1,dc=keyless", "password": token}, protocol.INVALID_DN_SYNTAX),
        ({"dn": "cn=a,b,ou=db1,dc=keyless", "password": token}, protocol.INVALID_DN_SYNTAX),
    ]
    client = RawClient(gateway.port)
    try:
        for number, (fields, code) in enumerate(cases, start=1):
            client.send(bind_request(message_id=number, **fields))
            reply = client.reply()
            assert reply is not None
            assert (reply.message_id, reply.op, reply.code) == (number, "bindResponse", code)
            assert reply.diagnostic
    finally:
        client.close()
    results = [r["result"] for r in bind_records(directory.engine, before)]
    assert results == [
        "anonymous",
        "unsupported_method",
        "no_token",
        "unsupported_version",
        "unsupported_control",
        "invalid_dn",
        "invalid_dn",
    ]


def test_other_operations_are_answered_and_refused(
    directory: Directory, gateway: GatewayThread
) -> None:
    connection = ldap3_connection(gateway.port, bind_dn(ROLE, SERVER), directory.token())
    try:
        assert connection.bind()
        operations = {
            "search": lambda: connection.search("dc=keyless", "(objectClass=*)"),
            "add": lambda: connection.add("cn=x,dc=keyless", "person", {"sn": "x"}),
            "delete": lambda: connection.delete("cn=x,dc=keyless"),
            "modify": lambda: connection.modify(
                "cn=x,dc=keyless", {"sn": [(ldap3.MODIFY_REPLACE, ["y"])]}
            ),
            "modify_dn": lambda: connection.modify_dn("cn=x,dc=keyless", "cn=y"),
            "compare": lambda: connection.compare("cn=x,dc=keyless", "sn", "x"),
        }
        for name, operation in operations.items():
            assert not operation(), name
            assert connection.result["result"] == protocol.UNWILLING_TO_PERFORM, name
        connection.extend.standard.who_am_i()
        assert connection.result["result"] == protocol.PROTOCOL_ERROR
    finally:
        connection.unbind()
    client = RawClient(gateway.port)
    try:
        client.send(extended_request(protocol.START_TLS, message_id=5))
        reply = client.reply()
        assert reply is not None
        assert (reply.message_id, reply.op, reply.code) == (5, "extendedResp", 2)
        assert "LDAPS" in reply.diagnostic
        # Abandon gets no answer (RFC 4511 4.11); the session goes on.
        abandon = rfc4511.AbandonRequest(3)
        client.send(ldap_message(6, "abandonRequest", abandon))
        client.send(bind_request(bind_dn(ROLE, SERVER), directory.token().encode(), 7))
        reply = client.reply()
        assert reply is not None and (reply.message_id, reply.code) == (7, 0)
        client.send(ldap_message(8, "unbindRequest", rfc4511.UnbindRequest("")))
        assert client.closed()
    finally:
        client.close()


def _client_bind_response() -> bytes:
    return protocol.encode_result(1, "bindResponse", 0, "")


GARBAGE = {
    "http": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "tls-client-hello": bytes.fromhex("160301002a010000260303") + bytes(32),
    "message-without-operation": b"\x30\x03\x02\x01\x01",
    "message-id-zero": b"\x30\x05\x02\x01\x00\x42\x00",
    "response-sent-by-client": _client_bind_response(),
    "indefinite-length": b"\x30\x80\x02\x01\x01\x42\x00\x00\x00",
    "trailing-bytes-inside-message": b"\x30\x08\x02\x01\x01\x42\x00\x04\x01x",
}


@pytest.mark.parametrize("payload", list(GARBAGE))
def test_garbage_gets_a_notice_of_disconnection(gateway: GatewayThread, payload: str) -> None:
    client = RawClient(gateway.port)
    try:
        client.send(GARBAGE[payload])
        notice = client.reply()
        assert notice is not None
        assert (notice.message_id, notice.op, notice.code) == (0, "extendedResp", 2)
        assert notice.response_name == protocol.NOTICE_OF_DISCONNECTION
        assert client.closed()
    finally:
        client.close()


def test_an_oversize_message_is_refused_from_its_header(gateway: GatewayThread) -> None:
    """A message claiming 1 MiB is refused before its body is sent: nothing is buffered."""
    client = RawClient(gateway.port)
    try:
        client.send(b"\x30\x83\x10\x00\x00\x02\x01\x01")
        notice = client.reply()
        assert notice is not None and (notice.message_id, notice.code) == (0, 2)
        assert "at most 65536" in notice.diagnostic
        assert client.closed()
    finally:
        client.close()


def test_fuzzed_messages_never_crash_the_gateway(
    directory: Directory, gateway: GatewayThread
) -> None:
    valid = bind_request(bind_dn(ROLE, SERVER), b"not-a-token")
    rng = random.Random(20240505)
    for _ in range(150):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            kind = rng.randrange(3)
            at = rng.randrange(len(data))
            if kind == 0:
                data[at] = rng.randrange(256)
            elif kind == 1:
                del data[at:]
                data += bytes([rng.randrange(256)])
            else:
                data[at:at] = rng.randbytes(rng.randint(1, 8))
        client = RawClient(gateway.port)
        try:
            client.send(bytes(data))
            client.sock.shutdown(socket.SHUT_WR)  # the server sees the end of the stream
            while (reply := client.reply()) is not None:
                assert reply.op in ("bindResponse", "extendedResp")
        except ConnectionError:
            pass  # closed while our bytes were unread: a disconnect, as intended
        finally:
            client.close()
    assert ldap3_bind(gateway.port, bind_dn(ROLE, SERVER), directory.token())["result"] == 0


def test_connections_are_bounded(directory: Directory) -> None:
    limits = Limits(message_timeout_s=1.0, max_requests=3)
    with GatewayThread(directory.authority, GatewaySettings(port=0, limits=limits)) as bounded:
        # A client that sends nothing, or stalls mid-message, is disconnected.
        for opening in (b"", b"\x30\x82"):
            client = RawClient(bounded.port)
            try:
                client.send(opening)
                assert client.closed()
            finally:
                client.close()
        # At most max_requests on one connection, then a notice.
        client = RawClient(bounded.port)
        try:
            for number in (1, 2, 3):
                client.send(bind_request(bind_dn(ROLE, SERVER), b"x", number))
                reply = client.reply()
                assert reply is not None and (reply.message_id, reply.code) == (number, 49)
            notice = client.reply()
            assert notice is not None
            assert (notice.message_id, notice.code) == (0, protocol.UNWILLING_TO_PERFORM)
            assert client.closed()
        finally:
            client.close()
    busy_limits = Limits(max_connections=2)
    with GatewayThread(directory.authority, GatewaySettings(port=0, limits=busy_limits)) as busy:
        held = [RawClient(busy.port) for _ in range(2)]
        try:
            for number, client in enumerate(held, start=1):
                client.send(bind_request(bind_dn(ROLE, SERVER), b"x", number))
                assert client.reply() is not None  # the session is open and counted
            third = RawClient(busy.port)
            try:
                notice = third.reply()
                assert notice is not None and notice.code == protocol.BUSY
                assert third.closed()
            finally:
                third.close()
        finally:
            for client in held:
                client.close()


@pytest.mark.filterwarnings("ignore:ssl.match_hostname:DeprecationWarning")  # in ldap3's client
def test_ldaps_with_the_keyless_server_certificate(directory: Directory) -> None:
    tls = server_tls_context(directory.data_dir, directory.master)
    with GatewayThread(directory.authority, GatewaySettings(port=0, tls=tls)) as ldaps:
        ca_file = directory.data_dir / "ca.pem"
        result = ldap3_bind(ldaps.port, bind_dn(ROLE, SERVER), directory.token(), ca_file)
        assert result["result"] == 0, result["message"]
        # A plain LDAP client gets no LDAP answer from the LDAPS port: the handshake fails.
        client = RawClient(ldaps.port)
        try:
            client.send(bind_request(bind_dn(ROLE, SERVER), b"x"))
            try:
                reply = client.reply()
            except (ConnectionError, AssertionError):
                reply = None
            assert reply is None
        finally:
            client.close()


# --- end to end: Keyless + gateway + PostgreSQL + psycopg ------------------------------------


@dataclass
class Stack:
    server: KeylessServer
    pg: PostgresServer
    engine: Engine
    authority: Authority  # the test's own view of the server's store, to craft tokens
    http: httpx.Client
    alice: Identity
    bob: Identity
    group_id: str

    def token(self, who: Identity, scope: str = POSTGRES_SCOPE) -> str:
        response = self.http.post(
            self.server.token_url(),
            data={
                "grant_type": "client_credentials",
                "client_id": who.app_id,
                "client_secret": who.secret,
                "scope": scope,
            },
        )
        assert response.status_code == 200, response.json().get("error_description")
        return str(response.json()["access_token"])

    def connect(self, role: str, password: str, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host=self.pg.host,
            port=self.pg.port,
            user=role,
            dbname=dbname,
            password=password,
            sslmode="disable",  # one attempt, one bind (prefer would not retry here either)
            connect_timeout=10,
        )


def _identity(server: KeylessServer, name: str) -> Identity:
    created = server.cli_json("ad", "sp", "create-for-rbac", "--name", name, "--secret")
    shown = server.cli_json("ad", "sp", "show", "--id", created["appId"])
    return Identity(shown["id"], created["appId"], created["password"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("gateway-e2e")
    with running_server(base / "data") as server:
        alice = _identity(server, "pg-alice")
        bob = _identity(server, "pg-bob")
        group_id = server.cli_json("ad", "group", "create", "--display-name", "pg-team")["id"]
        server.cli(
            "ad", "group", "member", "add", "--group", "pg-team", "--member-id", bob.object_id
        )
        paths = DataDir(server.data_dir)
        engine = open_engine(ServerConfig.load_or_default(paths).effective_store_url(paths))
        master = MasterKey.load(paths.master_key)
        authority = Authority.create(engine, master, server.endpoint, [])
        with Session(engine) as session, session.begin():
            for role, principal in ((ROLE, alice.object_id), (GROUP_ROLE, group_id)):
                add_mapping(session, server.tenant_id, SERVER, role, principal, "test")
        http = httpx.Client(verify=ssl.create_default_context(cafile=str(server.ca_file)))
        try:
            with (
                GatewayProcess(server) as plain,
                GatewayProcess(server, tls=True) as ldaps,
                world_readable(server.ca_file) as ca_copy,
            ):
                hba = [
                    # LDAPS for one database (the certificate names 127.0.0.1), plain for all.
                    hba_line(SERVER, "127.0.0.1", ldaps.port, tls=True, database="ldapsdb"),
                    hba_line(SERVER, "127.0.0.1", plain.port, tls=False),
                ]
                with PostgresServer(hba_lines=hba, env={"LDAPTLS_CACERT": str(ca_copy)}) as pg:
                    with psycopg.connect(pg.admin_url(), autocommit=True) as admin:
                        for role in (ROLE, GROUP_ROLE, "unmapped_user", "temp_user"):
                            admin.execute(
                                sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role))
                            )
                        admin.execute("CREATE DATABASE ldapsdb")
                    yield Stack(server, pg, engine, authority, http, alice, bob, group_id)
        finally:
            http.close()
            authority.issuer_keys.close()
            engine.dispose()


def test_postgresql_login_with_a_token_runs_queries(stack: Stack) -> None:
    token = stack.token(stack.alice)
    before = last_audit_id(stack.engine)
    with stack.connect(ROLE, token) as connection:
        assert connection.execute("SELECT current_user, 1 + 1").fetchone() == (ROLE, 2)
    (record,) = bind_records(stack.engine, before)
    assert (record["result"], record["actor"], record["target"]) == (
        "granted",
        stack.alice.object_id,
        f"{SERVER}/{ROLE}",
    )
    # The tenant's administrators see it in `keyless audit list`.
    listed = stack.server.audit(action="gateway.bind", result="granted")
    assert record["traceId"] in {r["traceId"] for r in listed}
    assert_no_token(listed, token)
    # Azure-written code asks for the Azure audience name: same resource, same result.
    azure_token = stack.token(stack.alice, "https://ossrdbms-aad.database.windows.net/.default")
    with stack.connect(ROLE, azure_token) as connection:
        assert connection.execute("SELECT current_user").fetchone() == (ROLE,)


def test_postgresql_reaches_the_gateway_over_ldaps(stack: Stack) -> None:
    before = last_audit_id(stack.engine)
    with stack.connect(ROLE, stack.token(stack.alice), dbname="ldapsdb") as connection:
        assert connection.execute("SELECT current_database()").fetchone() == ("ldapsdb",)
    (record,) = bind_records(stack.engine, before)
    assert (record["result"], record["details"]["transport"]) == ("granted", "ldaps")


def test_postgresql_login_through_a_group_mapping(stack: Stack) -> None:
    before = last_audit_id(stack.engine)
    with stack.connect(GROUP_ROLE, stack.token(stack.bob)) as connection:
        assert connection.execute("SELECT current_user").fetchone() == (GROUP_ROLE,)
    (record,) = bind_records(stack.engine, before)
    assert record["result"] == "granted" and record["details"]["viaGroup"] == stack.group_id


def _other_tenant_token(stack: Stack) -> str:
    """A valid token of another tenant in the same store (its own keys and postgres API), for
    a principal of that tenant (a token naming a principal its tenant does not have is refused
    before any role is looked at, as `principal_deleted`)."""
    now = time.time()
    with Session(stack.engine) as session, session.begin():
        tenant = Tenant(
            id=str(uuid.uuid4()),
            display_name="Other Directory",
            domain=f"{uuid.uuid4().hex[:12]}.other.test",
            created_at=now,
        )
        session.add(tenant)
        session.flush()
        session.add(
            ResourceApi(
                id=str(uuid.uuid4()),
                tenant_id=tenant.id,
                name="postgres",
                identifier_uris=["api://keyless/postgres"],
                built_in=True,
                created_at=now,
            )
        )
        keys.create_initial_keys(session, stack.authority.master, tenant.id)
        other = create_service_principal(session, tenant.id, "other-tenant-app")
        tenant_id, who = tenant.id, Identity(other.object_id, other.app_id)
    return mint_token(stack.authority, tenant_id, who)


E2E_REFUSALS = {
    "expired": lambda s: (
        ROLE,
        mint_token(s.authority, s.server.tenant_id, s.alice, now=time.time() - 7200),
    ),
    "wrong_audience": lambda s: (ROLE, s.token(s.alice, "api://keyless/management/.default")),
    "principal_not_mapped": lambda s: (ROLE, s.token(s.bob)),
    "wrong_tenant": lambda s: (ROLE, _other_tenant_token(s)),
    "bad_signature": lambda s: (ROLE, forge(s.token(s.alice))),
    "unknown_key": lambda s: (ROLE, forge(s.token(s.alice), kid="fresh-key")),
    "role_not_mapped": lambda s: ("unmapped_user", s.token(s.alice)),
}


@pytest.mark.parametrize("reason", list(E2E_REFUSALS))
def test_postgresql_login_is_refused_with_an_audited_reason(stack: Stack, reason: str) -> None:
    role, token = E2E_REFUSALS[reason](stack)
    before = last_audit_id(stack.engine)
    with pytest.raises(psycopg.OperationalError, match="LDAP authentication failed") as caught:
        stack.connect(role, token).close()
    assert token not in str(caught.value)
    (record,) = bind_records(stack.engine, before)
    assert record["result"] == reason
    assert record["target"] == f"{SERVER}/{role}"
    assert record["details"]["reason"]
    assert record["tenantId"] == stack.server.tenant_id
    assert_no_token([record], token)


def test_an_empty_password_never_reaches_the_gateway(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    before = last_audit_id(stack.engine)
    with pytest.raises(psycopg.OperationalError):
        stack.connect(ROLE, "").close()
    assert bind_records(stack.engine, before) == []


def test_removing_a_mapping_ends_logins_in_the_gateway_process(stack: Stack) -> None:
    tenant = stack.server.tenant_id
    with Session(stack.engine) as session, session.begin():
        add_mapping(session, tenant, SERVER, "temp_user", stack.alice.object_id, "test")
    token = stack.token(stack.alice)
    with stack.connect("temp_user", token) as connection:
        assert connection.execute("SELECT current_user").fetchone() == ("temp_user",)
    with Session(stack.engine) as session, session.begin():
        remove_mapping(session, tenant, SERVER, "temp_user", "test")
    before = last_audit_id(stack.engine)
    with pytest.raises(psycopg.OperationalError, match="LDAP authentication failed"):
        stack.connect("temp_user", token).close()
    assert [r["result"] for r in bind_records(stack.engine, before)] == ["role_not_mapped"]
