"""The token gateway: token validation for services that cannot check a JWT themselves.

First (and so far only) protocol: an LDAP simple-bind endpoint that PostgreSQL's built-in `ldap`
authentication delegates its password check to. The bind DN names the database role and the
server (`cn=<role>,ou=<server>,dc=keyless`), the password is a Keyless access token for
`api://keyless/postgres`. A bind succeeds only if the token is valid and the role was created
for the token's principal (or a group it belongs to) on that server.

Modules, one concept each: `names` (the bind DN and the pg_hba.conf line), `mappings` (which
principal a role belongs to, in the store), `rolemap` (those mappings cached per process),
`decision` (one bind: granted or refused, and its audit record), `ldap` (the LDAPv3 codec),
`settings` (listen address, TLS rule, limits), `server` (the asyncio listener), `run`
(`keyless gateway serve`).
"""
