"""The async credentials stay twins of the sync ones (issue #12).

Every public credential class in `keyless.identity` has a class of the same name in
`keyless.identity.aio` (`Credential`: `AsyncCredential`) whose public methods and properties
have the same signatures, apart from async-ness: parameter names, kinds, defaults and
annotations (an `Async` prefix on a type name aside, as in `AsyncRequestHook`). The shared
logic is written once, so what is left to drift is what a user sees.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest

from keyless import identity
from keyless.identity import aio

# The sync protocol methods and their async counterparts.
RENAMED = {"__enter__": "__aenter__", "__exit__": "__aexit__"}
AWAITED = {"get_token", "get_token_info", "close", "__enter__", "__exit__"}


def credential_classes() -> list[type]:
    names = [getattr(identity, name) for name in identity.__all__]
    return [c for c in names if isinstance(c, type) and issubclass(c, identity.Credential)]


def twin_of(sync: type) -> type:
    name = "AsyncCredential" if sync is identity.Credential else sync.__name__
    twin = getattr(aio, name, None)
    assert isinstance(twin, type), f"keyless.identity.aio has no {name} (twin of {sync})"
    return twin


def public_members(cls: type) -> dict[str, Any]:
    members = {}
    for name in dir(cls):
        if name.startswith("_") and name not in ("__init__", *RENAMED, *RENAMED.values()):
            continue
        value = inspect.getattr_static(cls, name)
        if isinstance(value, property) or inspect.isfunction(value):
            members[name] = value
    return members


def _annotation(text: Any) -> str:
    return re.sub(r"\bAsync(?=[A-Z])", "", str(text))


def shape(member: Any) -> tuple[Any, ...]:
    """What a caller sees of a method or property, async-ness aside."""
    if isinstance(member, property):
        assert member.fget is not None
        return ("property", _annotation(inspect.signature(member.fget).return_annotation))
    signature = inspect.signature(member)
    parameters = [
        (p.name, p.kind, repr(p.default), _annotation(p.annotation))
        for p in signature.parameters.values()
    ]
    return (*parameters, _annotation(signature.return_annotation))


def differences(sync: type, twin: type) -> list[str]:
    """Every way `twin` is not the async twin of `sync`; empty when it is."""
    found = []
    ours, theirs = public_members(sync), public_members(twin)
    for name, member in ours.items():
        twin_name = RENAMED.get(name, name)
        other = theirs.pop(twin_name, None)
        if other is None:
            found.append(f"{twin.__name__} has no {twin_name}")
            continue
        if inspect.iscoroutinefunction(member):
            found.append(f"{sync.__name__}.{name} is async in the sync class")
        if name in AWAITED and not inspect.iscoroutinefunction(other):
            found.append(f"{twin.__name__}.{twin_name} is not async")
        if shape(member) != shape(other):
            found.append(f"{name}: {shape(member)} != {shape(other)}")
    found += [f"{twin.__name__}.{name} has no sync twin" for name in theirs]
    return found


@pytest.mark.parametrize("sync", credential_classes(), ids=lambda c: c.__name__)
def test_async_twin_has_the_same_public_signatures(sync: type) -> None:
    twin = twin_of(sync)
    assert differences(sync, twin) == []
    assert issubclass(twin, aio.AsyncCredential)


def test_every_credential_in_aio_has_a_sync_twin() -> None:
    twins = {twin_of(c).__name__ for c in credential_classes()}
    async_classes = {
        name
        for name in aio.__all__
        if isinstance(getattr(aio, name), type)
        and issubclass(getattr(aio, name), aio.AsyncCredential)
    }
    assert async_classes == twins


def test_a_drifted_signature_is_reported() -> None:
    """The comparison is not vacuous: a keyword the twin lacks, a changed default, a sync
    method where an awaited one belongs, and an extra method are all caught."""

    class Sync(identity.Credential):
        def __init__(self, *, authority: str | None = None, timeout: float = 10.0) -> None: ...

        def get_token(self, *scopes: str, **kwargs: Any) -> identity.AccessToken: ...

        def get_token_info(self, *scopes: str, options: Any = None) -> identity.AccessTokenInfo: ...

    class Async(aio.AsyncCredential):
        def __init__(self, *, authority: str | None = None, timeout: float = 5.0) -> None: ...

        def get_token(self, *scopes: str, **kwargs: Any) -> identity.AccessToken: ...  # type: ignore[override]

        async def get_token_info(self, *scopes: str) -> identity.AccessTokenInfo: ...  # type: ignore[override]

        def extra(self) -> None: ...

    found = differences(Sync, Async)
    assert any(f.startswith("__init__:") and "'10.0'" in f for f in found), found
    assert "Async.get_token is not async" in found
    assert any(f.startswith("get_token_info:") for f in found), found
    assert "Async.extra has no sync twin" in found
