"""`keyless group`, `keyless identity`, `keyless app` and `keyless account`: the resource
manager, in the shape of `az group`, `az identity`, `az webapp` and `az account`, one module per
command group.

Everything goes through the management API (ARM paths, the signed-in user's token); the server
validates and authorises, and its messages say what to do. The helpers that build ARM paths,
pick the subscription and read az-style options (`arm`, `az`) are shared with the other command
groups, which import them from here.
"""

from keyless.cli.output import show
from keyless.cli.resources.account import account_app
from keyless.cli.resources.arm import (
    APP_TYPE,
    AUTHZ,
    IDENTITY_TYPE,
    group_of,
    group_path,
    is_within,
    list_resources,
    resource_id,
    resource_path,
    scope_key,
    scope_path,
    segment,
    subscription_of,
    token_of,
)
from keyless.cli.resources.az import (
    SYSTEM,
    AzCommand,
    GroupOption,
    NameOption,
    OptionalGroupOption,
    SubscriptionOption,
    TagsOption,
    parse_tags,
    spread,
)
from keyless.cli.resources.group import group_app
from keyless.cli.resources.identity import identity_app, identity_json
from keyless.cli.resources.kind import ResourceKind, add_commands
from keyless.cli.resources.webapp import app_app, app_json

# The names the vault commands were written against.
_list = list_resources
_tags = parse_tags

__all__ = [
    "APP_TYPE",
    "AUTHZ",
    "IDENTITY_TYPE",
    "SYSTEM",
    "AzCommand",
    "GroupOption",
    "NameOption",
    "OptionalGroupOption",
    "ResourceKind",
    "SubscriptionOption",
    "TagsOption",
    "_list",
    "_tags",
    "account_app",
    "add_commands",
    "app_app",
    "app_json",
    "group_app",
    "group_of",
    "group_path",
    "identity_app",
    "identity_json",
    "is_within",
    "list_resources",
    "parse_tags",
    "resource_id",
    "resource_path",
    "scope_key",
    "scope_path",
    "segment",
    "show",
    "spread",
    "subscription_of",
    "token_of",
]
