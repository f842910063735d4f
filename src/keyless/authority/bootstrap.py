"""`keyless init`: everything a fresh data directory and store need, created once.

Each step checks what exists before creating, so running init again changes nothing and says
so; a data directory whose master key does not open its store is refused, never "repaired".
"""

from __future__ import annotations

import getpass
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from keyless.authority import keys
from keyless.authority.config import DataDir, ServerConfig
from keyless.authority.masterkey import MasterKey
from keyless.authority.tls import (
    DEFAULT_TLS_NAMES,
    TlsFiles,
    create_ca,
    issue_server_certificate,
    server_certificate_names,
    server_certificate_needs_renewal,
)
from keyless.base.roles import OWNER_ROLE_ID
from keyless.base.scopes import ROOT
from keyless.base.vault_domain import tls_names_for
from keyless.store.engine import open_engine
from keyless.store.generation import ACCESS_GENERATION, bump_generation
from keyless.store.migrate import upgrade
from keyless.store.models import ResourceApi, RoleAssignment, Subscription, Tenant, User

# The audiences every tenant starts with. The first URI is the canonical `aud`; the rest are the
# names Azure-written code asks for, mapped to the same resource (docs/design.md "Tokens").
BUILT_IN_RESOURCE_APIS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "management",
        (
            "api://keyless/management",
            "https://management.azure.com",
            "https://management.core.windows.net",
        ),
    ),
    ("postgres", ("api://keyless/postgres", "https://ossrdbms-aad.database.windows.net")),
    ("vault", ("api://keyless/vault", "https://vault.azure.net")),
    ("messaging", ("api://keyless/messaging", "https://servicebus.azure.net")),
    ("storage", ("api://keyless/storage", "https://storage.azure.com")),
)
DEFAULT_DOMAIN = "keyless.local"


@dataclass
class InitReport:
    data_dir: Path
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    tenant_id: str = ""
    subscription_id: str = ""
    admin: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.created)


def _prepare_dir(data_dir: Path, report: InitReport) -> None:
    if data_dir.exists():
        if not data_dir.is_dir():
            raise NotADirectoryError(f"{data_dir} exists and is not a directory")
        mode = data_dir.stat().st_mode & 0o777
        if mode & 0o077:
            data_dir.chmod(0o700)
            report.created.append(f"tightened {data_dir} to mode 0700 (it was {mode:o})")
        else:
            report.existing.append(f"data directory {data_dir}")
        return
    data_dir.mkdir(mode=0o700, parents=True)
    data_dir.chmod(0o700)
    report.created.append(f"data directory {data_dir} (0700)")


def _master_key(paths: DataDir, report: InitReport) -> MasterKey:
    if paths.master_key.exists():
        report.existing.append("master key")
        return MasterKey.load(paths.master_key)
    master = MasterKey.generate()
    master.save(paths.master_key)
    report.created.append(f"master key {paths.master_key} (0600)")
    return master


def _tls(paths: DataDir, master: MasterKey, names: list[str], report: InitReport) -> None:
    files = TlsFiles.in_dir(paths.root)
    if files.ca_cert.exists() and files.ca_key.exists():
        report.existing.append("local certificate authority")
    else:
        create_ca(files, master, label=paths.root.name)
        report.created.append(f"local certificate authority {files.ca_cert}")
    if files.server_cert.exists() and files.server_key.exists():
        if server_certificate_needs_renewal(files, names):
            wanted = list(dict.fromkeys([*server_certificate_names(files), *names]))
            issue_server_certificate(files, master, wanted)
            report.created.append(f"server certificate renewed for {', '.join(wanted)}")
        else:
            report.existing.append("server certificate")
    else:
        issue_server_certificate(files, master, names)
        report.created.append(f"server certificate for {', '.join(names)}")


def _ensure_root_owner(session: Session, tenant_id: str, admin_id: str) -> bool:
    """The first administrator owns the tenant root scope; True if the grant was missing."""
    exists = session.scalars(
        select(RoleAssignment).where(
            RoleAssignment.principal_id == admin_id,
            RoleAssignment.role_definition_id == OWNER_ROLE_ID,
            RoleAssignment.scope_key == ROOT,
        )
    ).first()
    if exists is not None:
        return False
    session.add(
        RoleAssignment(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            principal_id=admin_id,
            principal_type="User",
            role_definition_id=OWNER_ROLE_ID,
            scope=ROOT,
            scope_key=ROOT,
            created_at=time.time(),
            created_by="keyless init",
        )
    )
    bump_generation(session, ACCESS_GENERATION)
    return True


def _tenant(
    engine: Engine, master: MasterKey, os_user: str, os_uid: int, report: InitReport
) -> None:
    now = time.time()
    with Session(engine) as session, session.begin():
        tenant = session.scalars(select(Tenant).where(Tenant.is_default)).first()
        if tenant is not None:
            report.existing.append(f"default tenant {tenant.id}")
            report.tenant_id = tenant.id
            subscription = session.scalars(
                select(Subscription).where(
                    Subscription.tenant_id == tenant.id, Subscription.is_default
                )
            ).first()
            report.subscription_id = subscription.id if subscription else ""
            admin = session.scalars(
                select(User).where(User.tenant_id == tenant.id, User.is_tenant_admin)
            ).first()
            report.admin = admin.user_principal_name if admin else ""
            if admin is not None and _ensure_root_owner(session, tenant.id, admin.object_id):
                report.created.append(f"Owner role at / for {admin.user_principal_name}")
            return
        tenant = Tenant(
            id=str(uuid.uuid4()),
            display_name="Default Directory",
            domain=DEFAULT_DOMAIN,
            is_default=True,
            created_at=now,
        )
        session.add(tenant)
        session.flush()
        subscription = Subscription(
            id=str(uuid.uuid4()),
            tenant_id=tenant.id,
            display_name="Default subscription",
            is_default=True,
            created_at=now,
        )
        session.add(subscription)
        for name, uris in BUILT_IN_RESOURCE_APIS:
            session.add(
                ResourceApi(
                    id=str(uuid.uuid4()),
                    tenant_id=tenant.id,
                    name=name,
                    identifier_uris=list(uris),
                    built_in=True,
                    created_at=now,
                )
            )
        upn = f"{os_user}@{DEFAULT_DOMAIN}"
        admin_id = str(uuid.uuid4())
        session.add(
            User(
                object_id=admin_id,
                tenant_id=tenant.id,
                user_principal_name=upn,
                display_name=os_user,
                os_uid=os_uid,
                is_tenant_admin=True,
                created_at=now,
            )
        )
        keys.create_initial_keys(session, master, tenant.id)
        session.flush()
        _ensure_root_owner(session, tenant.id, admin_id)
        bump_generation(session)
        report.tenant_id, report.subscription_id, report.admin = tenant.id, subscription.id, upn
        report.created += [
            f"default tenant {tenant.id} ({DEFAULT_DOMAIN})",
            f"default subscription {subscription.id}",
            "signing keys (one active, one next)",
            f"built-in resource APIs: {', '.join(n for n, _ in BUILT_IN_RESOURCE_APIS)}",
            f"administrator {upn} (linked to OS user {os_user}, uid {os_uid}), Owner at /",
        ]


def initialise(
    data_dir: Path,
    store_url: str | None = None,
    tls_names: list[str] | None = None,
    port: int | None = None,
    gateway_port: int | None = None,
) -> InitReport:
    data_dir = data_dir.expanduser().resolve()
    report = InitReport(data_dir=data_dir)
    paths = DataDir(data_dir)
    _prepare_dir(data_dir, report)
    master = _master_key(paths, report)
    names = list(dict.fromkeys([*DEFAULT_TLS_NAMES, *(tls_names or [])]))
    config = ServerConfig.load_or_default(paths)
    config_changed = not paths.config.exists()
    if store_url is not None and store_url != config.store_url:
        config.store_url = store_url
        config_changed = True
    if port is not None and port != config.port:
        config.port = port
        config_changed = True
    if gateway_port is not None and gateway_port != config.gateway_port:
        config.gateway_port = gateway_port
        config_changed = True
    extra = [n for n in names if n not in config.tls_names]
    if extra:
        config.tls_names = [*config.tls_names, *extra]
        config_changed = True
    _tls(paths, master, [*config.tls_names, *tls_names_for(config.endpoint())], report)
    engine = open_engine(config.effective_store_url(paths))
    try:
        upgrade(engine)
        _tenant(engine, master, getpass.getuser(), os.getuid(), report)
    finally:
        engine.dispose()
    if config_changed:
        config.save(paths)
        report.created.append(f"configuration {paths.config}")
    else:
        report.existing.append("configuration")
    return report
