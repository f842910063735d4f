"""The same code, locally and deployed: azure-identity's DefaultAzureCredential, unchanged.

On a developer's machine (after `keyless login` and `eval "$(keyless env)"`) it gets the
developer's token through the Azure CLI credential; under `keyless app run` it gets the app's
managed identity token. It prints whose token it got (never the token itself).
"""

import base64
import json

from azure.identity import DefaultAzureCredential

token = DefaultAzureCredential().get_token("https://ossrdbms-aad.database.windows.net/.default")
payload = token.token.split(".")[1]
claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
print(json.dumps({"oid": claims["oid"], "idtyp": claims.get("idtyp"), "aud": claims["aud"]}))
