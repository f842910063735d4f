"""The bottom layer: what every part of Keyless shares, importing nothing else from Keyless.

ARM ids and scopes, the error base and the ARM error shape, request-body limits, the event
loop and listening sockets, and the vault naming rules the authority's TLS setup needs.
docs/architecture.md shows the layers above it.
"""
