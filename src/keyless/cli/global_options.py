"""`--output` and `--query` on every command, added in one place as az adds its global
arguments, so no command can forget them and none declares them twice.

Each command's function is wrapped before Typer builds the command line: the wrapper's
signature is the command's own plus the options it lacks, and the wrapper hands their values to
`keyless.cli.output.begin` (which checks the query's syntax) before the command runs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer

from keyless.cli.options import OutputOption
from keyless.cli.output import begin

QueryOption = Annotated[
    str | None,
    typer.Option(
        "--query",
        help="JMESPath query string, applied to the result before --output "
        "(https://jmespath.org), e.g. --query id -o tsv.",
        show_default=False,
    ),
]

_WRAPPED = "__keyless_global_options__"


def add_global_options(app: typer.Typer, raw: Iterable[Callable[..., Any]] = ()) -> None:
    """Give every command under `app` --output/-o and --query. Commands in `raw` print no
    result (servers, process runners, shell exports) and are left as they are; a group's own
    callback gets them only if it prints a result (it takes `output`)."""
    skip = set(raw)
    for info in app.registered_commands:
        if info.callback is not None and info.callback not in skip:
            info.callback = _wrap(info.callback)
    for group in app.registered_groups:
        sub = group.typer_instance
        if sub is None:
            continue
        callback = sub.registered_callback.callback if sub.registered_callback else None
        if callback is not None and "output" in inspect.signature(callback).parameters:
            assert sub.registered_callback is not None
            sub.registered_callback.callback = _wrap(callback)
        add_global_options(sub, skip)


def _wrap(command: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(command, _WRAPPED, False):
        return command
    signature = inspect.signature(command, eval_str=True)
    has_output = "output" in signature.parameters
    if "query" in signature.parameters:
        raise TypeError(f"{command.__qualname__} has its own `query`: --query is global")
    extra = [inspect.Parameter("query", inspect.Parameter.KEYWORD_ONLY, annotation=QueryOption)]
    if not has_output:
        extra.insert(
            0,
            inspect.Parameter(
                "output", inspect.Parameter.KEYWORD_ONLY, default="json", annotation=OutputOption
            ),
        )
    extra[-1] = extra[-1].replace(default=None)

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        query = kwargs.pop("query")
        output = kwargs["output"] if has_output else kwargs.pop("output")
        begin(output, query)
        return command(*args, **kwargs)

    run.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), *extra]
    )
    run.__annotations__ = {
        **{p.name: p.annotation for p in signature.parameters.values()},
        **{p.name: p.annotation for p in extra},
    }
    setattr(run, _WRAPPED, True)
    return run
