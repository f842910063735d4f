"""Built-in role IDs that layers below keyless.access need by name.

`keyless init` (keyless.authority.bootstrap) makes the first administrator Owner at the root
scope before any access code runs; the role itself is defined with the other built-in roles in
keyless.access.permissions, which takes its ID from here so the two cannot drift.
"""

from __future__ import annotations

# Azure's own ID for Owner, so scripts that name the role by ID keep working.
OWNER_ROLE_ID = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
