"""Federated identity credentials on user-assigned identities: a workload outside Keyless (a
Kubernetes service account, a CI job) exchanges its platform's OIDC token for the identity's
token, with no secret at all. ARM child resources of the identity, as in Azure."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.routing import Route

from keyless.access.arm import ArmApi, Call
from keyless.authority import directory
from keyless.authority.directory import DirectoryError
from keyless.base.errors import ResourceError, bad_request
from keyless.base.scopes import Scope
from keyless.resources.manager import find_resource
from keyless.store.generation import bump_generation
from keyless.store.models import FederatedCredential

IDENTITY = (
    "/subscriptions/{subscription}/resourceGroups/{group}/providers/"
    "Keyless.ManagedIdentity/userAssignedIdentities/{name}"
)
CHILD = "federatedIdentityCredentials"
ACTION = "Keyless.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/{}"


def _identity_scope(request: Request) -> Scope:
    p = request.path_params
    return Scope(
        p["subscription"],
        p["group"],
        "Keyless.ManagedIdentity",
        ("userAssignedIdentities",),
        (p["name"],),
    )


def _json(identity_id: str, fic: FederatedCredential) -> dict[str, Any]:
    return {
        "id": f"{identity_id}/{CHILD}/{fic.name}",
        "name": fic.name,
        "type": f"Keyless.ManagedIdentity/userAssignedIdentities/{CHILD}",
        "properties": {
            "issuer": fic.issuer,
            "subject": fic.subject,
            "audiences": list(fic.audiences),
        },
    }


def _client_id(call: Call) -> tuple[str, str]:
    identity = find_resource(call.session, call.caller.tenant_id, _identity_scope(call.request))
    return identity.id, str(identity.properties["clientId"])


def _find(call: Call, client_id: str) -> FederatedCredential:
    fic = call.session.scalars(
        select(FederatedCredential).where(
            FederatedCredential.app_id == client_id,
            FederatedCredential.name == call.param("fic"),
        )
    ).first()
    if fic is None:
        raise ResourceError(
            404, "ResourceNotFound", f"no federated identity credential {call.param('fic')!r}"
        )
    return fic


def build_routes(api: ArmApi) -> list[Route]:
    def put(call: Call) -> Any:
        identity_id, client_id = _client_id(call)
        props = call.body.get("properties", {})
        if not isinstance(props, dict):
            raise bad_request("properties must be an object with issuer, subject, audiences")
        existing = call.session.scalars(
            select(FederatedCredential).where(
                FederatedCredential.app_id == client_id,
                FederatedCredential.name == call.param("fic"),
            )
        ).first()
        if existing is not None:  # PUT replaces, as ARM does
            call.session.delete(existing)
            call.session.flush()
        try:
            directory.add_federated_credential(
                call.session,
                call.caller.tenant_id,
                client_id,
                {**props, "name": call.param("fic")},
            )
        except DirectoryError as exc:
            raise ResourceError(exc.status, exc.code, exc.message) from None
        return _json(identity_id, _find(call, client_id)), existing is None

    def show(call: Call) -> Any:
        identity_id, client_id = _client_id(call)
        return _json(identity_id, _find(call, client_id))

    def list_(call: Call) -> Any:
        identity_id, client_id = _client_id(call)
        rows = call.session.scalars(
            select(FederatedCredential)
            .where(FederatedCredential.app_id == client_id)
            .order_by(FederatedCredential.name)
        )
        return {"value": [_json(identity_id, f) for f in rows]}

    def delete(call: Call) -> Any:
        _identity_id, client_id = _client_id(call)
        call.session.delete(_find(call, client_id))
        bump_generation(call.session)
        return None

    def scope(request: Request) -> str:
        return _identity_scope(request).id()

    one = f"{IDENTITY}/{CHILD}/{{fic}}"
    return [
        api.route(f"{IDENTITY}/{CHILD}", "GET", ACTION.format("read"), scope, list_),
        api.route(one, "PUT", ACTION.format("write"), scope, put),
        api.route(one, "GET", ACTION.format("read"), scope, show),
        api.route(one, "DELETE", ACTION.format("delete"), scope, delete),
    ]
