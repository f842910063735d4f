"""The `keyless` command, shaped after the `az` CLI."""
