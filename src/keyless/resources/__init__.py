"""The resource manager (keyless.resources): subscriptions, resource groups, resources and their
managed identities, behind the ARM-shaped API."""
