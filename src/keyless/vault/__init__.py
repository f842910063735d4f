"""The Keyless vault: an Azure Key Vault-compatible secret store (issue #6).

`Keyless.Vault/vaults` resources are managed through the resource manager; each vault answers
on its own host name, `https://{vault}.vault.{public host}:{port}`, where the Key Vault REST
data plane (`keyless.vault.api`) serves its secrets to callers whose roles grant the data
actions.
"""
