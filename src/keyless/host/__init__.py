"""Running applications as resources with identities (keyless.host): `keyless app run`, the
managed identity endpoint it serves, and the authority route that backs it."""
