"""Keyless's stand-in for one Azure CLI command: `az account get-access-token`.

azure-identity's `DefaultAzureCredential` (unchanged) asks, on a developer's machine, the Azure
CLI for a token: it runs `az account get-access-token --output json --resource R [--tenant T]
[--subscription S]` from `/bin` and reads `accessToken` and `expires_on`. `keyless env` writes
a small `az` script into `{data dir}/bin` that runs this module, and puts that directory on PATH
where no real Azure CLI is installed (or where the user asks: `keyless env --az-shim on`). So
after `keyless login` the same code that uses a managed identity under `keyless app run` uses
the developer's Keyless sign-in locally, as it would use `az login` against Azure.

Every other `az` command is refused with a message saying what this `az` is: a stand-in must
never pretend to be the Azure CLI.
"""

from __future__ import annotations

import sys

from keyless.base.errors import KeylessError

ANSWERED = ("account", "get-access-token")
# az's options for get-access-token that Keyless answers, and those it accepts and ignores:
# a Keyless token is for a tenant, not a subscription (as an Entra token is).
_PASSED = {"--resource", "--scope", "--tenant", "-t", "--output", "-o", "--resource-type"}
_IGNORED = {"--subscription", "-s"}
_FLAGS_IGNORED = {"--only-show-errors", "--debug", "--verbose"}


class ShimError(KeylessError):
    """What the stand-in `az` cannot do; printed as az prints its errors."""


def translate(argv: list[str]) -> list[str]:
    """`az` arguments -> `keyless` arguments, or ShimError saying what is not answered."""
    if tuple(argv[:2]) != ANSWERED:
        shown = " ".join(argv[:3])[:80] or "(no command)"
        raise ShimError(
            f"this `az` is Keyless's stand-in ({sys.argv[0]}), which answers only "
            f"`az account get-access-token`, not `az {shown}`; the Azure CLI itself is not on "
            'PATH. To stop using the stand-in: eval "$(keyless env --az-shim off)"'
        )
    out = list(ANSWERED)
    rest = argv[2:]
    i = 0
    while i < len(rest):
        arg = rest[i]
        name, has_value, value = arg.partition("=")
        if name in _FLAGS_IGNORED:
            i += 1
            continue
        if name not in _PASSED and name not in _IGNORED:
            raise ShimError(
                f"`az account get-access-token {name[:60]}` is not answered by Keyless's "
                "stand-in; it takes --resource, --scope, --tenant and --output json"
            )
        if not has_value:
            if i + 1 >= len(rest):
                raise ShimError(f"{name} needs a value")
            value = rest[i + 1]
            i += 1
        i += 1
        if name in _PASSED:
            out += [name, value]
    return out


def main() -> None:
    try:
        args = translate(sys.argv[1:])
    except ShimError as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        raise SystemExit(2) from None
    from keyless.cli.main import app

    app(args=args, prog_name="az")


if __name__ == "__main__":
    main()
