"""Service Connector: connect an app to a service in one step, with no secret anywhere.

A connection enables the app's identity if needed, provisions the target (a database role and
its grants, a role assignment), writes the app's configuration keys, and records itself as a
resource under the app (`{app}/connections/{name}`). Every step is undone if a later one fails,
and `delete` reverts what the connection made. Targets are modules with one interface
(`target.Target`: provision, configuration keys, validate, revert), so new ones drop in.

Modules: `keys` (the configuration keys per target and client type), `plan` (undoable steps),
`target` (the interface and the registry), `postgres` (the PostgreSQL target), `records` (the
connection resource type), `api` (its routes and the server-side `validate`), `service` (create
and delete as the CLI runs them).
"""
