"""The token service (keyless.authority): tenants, the directory, keys, and the OAuth 2.0 and
OpenID endpoints that issue and validate tokens."""
