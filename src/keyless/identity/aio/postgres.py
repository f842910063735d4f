"""The async PostgreSQL helpers under the names the sync ones have, as everywhere in
`keyless.identity.aio`: `connect` is `keyless.identity.postgres.connect_async` and
`create_engine` is `keyless.identity.postgres.create_async_engine`."""

from ..postgres import DEFAULT_PREFIX, DEFAULT_SCOPE, ConnectionSettingsError
from ..postgres import connect_async as connect
from ..postgres import create_async_engine as create_engine

__all__ = ["DEFAULT_PREFIX", "DEFAULT_SCOPE", "ConnectionSettingsError", "connect", "create_engine"]
