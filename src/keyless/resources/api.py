"""The resource manager's REST API: ARM paths, where the resource ID is the path.

Lists return only what the caller may read (nobody sees what they cannot read), so they check
each item rather than the scope they list.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.routing import Route

from keyless.access.arm import ArmApi, Call
from keyless.base.errors import ResourceError, bad_request
from keyless.base.scopes import ROOT, Scope, parse_scope
from keyless.resources import manager
from keyless.resources.manager import resolve_type
from keyless.resources.types import registered
from keyless.store.models import Subscription

SUBSCRIPTION_READ = "Keyless.Resources/subscriptions/read"
SUBSCRIPTION_WRITE = "Keyless.Resources/subscriptions/write"
GROUP_ACTION = "Keyless.Resources/subscriptions/resourceGroups/{}"
SUB = "/subscriptions/{subscription}"
RG = SUB + "/resourceGroups/{group}"
RES = RG + "/providers/{namespace}/{type}/{name}"


def _sub_scope(request: Request) -> str:
    return Scope(request.path_params["subscription"]).id()


def _group_scope(request: Request) -> str:
    return Scope(request.path_params["subscription"], request.path_params["group"]).id()


def _resource_scope(request: Request) -> Scope:
    p = request.path_params
    return parse_scope(
        f"/subscriptions/{p['subscription']}/resourceGroups/{p['group']}/providers/"
        f"{p['namespace']}/{p['type']}/{p['name']}"
    )


def _resource_action(verb: str) -> Any:
    def action_of(request: Request) -> str:
        return resolve_type(_resource_scope(request)).action(verb)

    action_of.template = "{namespace}/{type}/" + verb  # type: ignore[attr-defined]
    return action_of


def _type_action(request: Request) -> str:
    """`{namespace}/{type}/read`, checked on each listed item."""
    p = request.path_params
    scope = Scope(p["subscription"], p["group"], p["namespace"], (p["type"],), ("x",))
    return resolve_type(scope).action("read")


def _readable(call: Call, items: list[Any], action_of: Any) -> list[Any]:
    return [item for item in items if call.caller.check(action_of(item), item.id).allowed]


def _subscription_json(subscription: Subscription) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{subscription.id}",
        "subscriptionId": subscription.id,
        "tenantId": subscription.tenant_id,
        "displayName": subscription.display_name,
        "state": "Enabled",
        "isDefault": subscription.is_default,
    }


# -------------------------------------------------------------------------------- handlers


def list_subscriptions(call: Call) -> Any:
    rows = call.session.scalars(
        select(Subscription).where(Subscription.tenant_id == call.caller.tenant_id)
    ).all()
    visible = [
        s for s in rows if call.caller.check(SUBSCRIPTION_READ, f"/subscriptions/{s.id}").allowed
    ]
    return {"value": [_subscription_json(s) for s in visible]}


def create_subscription(call: Call) -> Any:
    name = call.body.get("displayName")
    if not isinstance(name, str) or not 0 < len(name.strip()) <= 64:
        raise bad_request("displayName must be 1 to 64 characters")
    subscription = Subscription(
        id=str(uuid.uuid4()),
        tenant_id=call.caller.tenant_id,
        display_name=name.strip(),
        is_default=False,
        created_at=time.time(),
    )
    call.session.add(subscription)
    call.session.flush()
    return _subscription_json(subscription), True


def show_subscription(call: Call) -> Any:
    return _subscription_json(
        manager.subscription_for(call.session, call.caller.tenant_id, call.param("subscription"))
    )


def list_groups(call: Call) -> Any:
    groups = manager.list_groups(call.session, call.caller.tenant_id, call.param("subscription"))
    visible = _readable(call, groups, lambda _g: GROUP_ACTION.format("read"))
    return {"value": [manager.group_json(g) for g in visible]}


def put_group(call: Call) -> Any:
    return manager.put_group(
        call.session,
        call.caller.tenant_id,
        call.param("subscription"),
        call.param("group"),
        call.body,
    )


def show_group(call: Call) -> Any:
    return manager.group_json(
        manager.find_group(
            call.session, call.caller.tenant_id, call.param("subscription"), call.param("group")
        )
    )


def patch_group(call: Call) -> Any:
    group = manager.find_group(
        call.session, call.caller.tenant_id, call.param("subscription"), call.param("group")
    )
    body = {"tags": call.body.get("tags", group.tags), "location": group.location}
    result, _ = manager.put_group(
        call.session, call.caller.tenant_id, call.param("subscription"), call.param("group"), body
    )
    return result


def delete_group(call: Call) -> Any:
    return manager.delete_group(
        call.session, call.caller.tenant_id, call.param("subscription"), call.param("group")
    )


def _resources_json(call: Call, rows: list[Any]) -> Any:
    visible = _readable(call, rows, lambda r: f"{r.type}/read")
    return {"value": [manager.resource_json(r) for r in visible]}


def list_group_resources(call: Call) -> Any:
    rows = manager.list_resources(
        call.session, call.caller.tenant_id, call.param("subscription"), call.param("group")
    )
    return _resources_json(call, rows)


def list_subscription_resources(call: Call) -> Any:
    type_filter = call.request.query_params.get("resourceType")
    rows = manager.list_resources(
        call.session,
        call.caller.tenant_id,
        call.param("subscription"),
        None,
        resolve_type_name(type_filter) if type_filter else None,
    )
    return _resources_json(call, rows)


def resolve_type_name(name: str) -> str:
    namespace, _, kind = name.partition("/")
    return resolve_type(Scope("x", "x", namespace, (kind,), ("x",))).type


def list_typed_resources(call: Call) -> Any:
    p = call.request.path_params
    type_name = resolve_type_name(f"{p['namespace']}/{p['type']}")
    rows = manager.list_resources(
        call.session, call.caller.tenant_id, p["subscription"], p["group"], type_name
    )
    return _resources_json(call, rows)


def put_resource(call: Call) -> Any:
    return manager.put_resource(call.session, call.caller, _resource_scope(call.request), call.body)


def patch_resource(call: Call) -> Any:
    result, _ = manager.put_resource(
        call.session, call.caller, _resource_scope(call.request), call.body, merge=True
    )
    return result


def show_resource(call: Call) -> Any:
    return manager.resource_json(
        manager.find_resource(call.session, call.caller.tenant_id, _resource_scope(call.request))
    )


def delete_resource(call: Call) -> Any:
    return manager.delete_resource(
        call.session, call.caller.tenant_id, _resource_scope(call.request)
    )


def resource_types(call: Call) -> Any:
    return {"value": registered()}


def build_routes(api: ArmApi) -> list[Route]:
    def root(_r: Request) -> str:
        return ROOT

    group = GROUP_ACTION.format
    return [
        api.route(
            "/subscriptions", "GET", SUBSCRIPTION_READ, root, list_subscriptions, filtered=True
        ),
        api.route("/subscriptions", "POST", SUBSCRIPTION_WRITE, root, create_subscription),
        api.route(SUB, "GET", SUBSCRIPTION_READ, _sub_scope, show_subscription),
        api.route(
            "/providers/Keyless.Resources/resourceTypes",
            "GET",
            "Keyless.Resources/resourceTypes/read",
            root,
            resource_types,
        ),
        api.route(
            SUB + "/resourceGroups", "GET", group("read"), _sub_scope, list_groups, filtered=True
        ),
        api.route(
            SUB + "/resources",
            "GET",
            "Keyless.Resources/resources/read",
            _sub_scope,
            list_subscription_resources,
            filtered=True,
        ),
        api.route(RG, "PUT", group("write"), _group_scope, put_group),
        api.route(RG, "GET", group("read"), _group_scope, show_group),
        api.route(RG, "PATCH", group("write"), _group_scope, patch_group),
        api.route(RG, "DELETE", group("delete"), _group_scope, delete_group),
        api.route(
            RG + "/resources",
            "GET",
            "Keyless.Resources/resources/read",
            _group_scope,
            list_group_resources,
            filtered=True,
        ),
        api.route(
            RG + "/providers/{namespace}/{type}",
            "GET",
            _type_action,
            _group_scope,
            list_typed_resources,
            filtered=True,
        ),
        api.route(
            RES, "PUT", _resource_action("write"), lambda r: _resource_scope(r).id(), put_resource
        ),
        api.route(
            RES, "GET", _resource_action("read"), lambda r: _resource_scope(r).id(), show_resource
        ),
        api.route(
            RES,
            "PATCH",
            _resource_action("write"),
            lambda r: _resource_scope(r).id(),
            patch_resource,
        ),
        api.route(
            RES,
            "DELETE",
            _resource_action("delete"),
            lambda r: _resource_scope(r).id(),
            delete_resource,
        ),
    ]


__all__ = ["ResourceError", "build_routes"]
