"""The ``facecraft`` console command.

Each feature package owns its subcommands: it exposes ``register(subparsers)`` in a ``cli``
module, which adds a parser whose ``func`` default takes the parsed ``argparse.Namespace`` and
returns an exit code. This file only wires them together, so heavy imports (torch, tritonclient)
happen only when their subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Mapping

from facecraft import __version__

# (module path, subcommands it registers) — modules are imported lazily when building the parser;
# a module whose optional dependencies are missing still shows its subcommands with a hint.
SUBCOMMAND_MODULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("facecraft.export.cli", ("export",)),
    ("facecraft.runtime.cli", ("serve", "repo")),
    ("facecraft.client.cli", ("process",)),
    ("facecraft.bench.cli", ("bench", "perf-data")),
    ("facecraft.gateway.cli", ("worker",)),
)


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2 (or ``exit_code``)."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


ENV_PRECEDENCE = (
    "A flag overrides its FACECRAFT_* environment variable, which overrides the built-in default."
)


def env_argument(
    parser: argparse.ArgumentParser,
    *flags: str,
    env: str,
    default: object,
    type: Callable[[str], object] = str,
    help: str,
    **kwargs,
) -> None:
    """Add an option whose value comes from the flag, else ``$env``, else ``default`` (resolved by
    :func:`apply_env_defaults` after parsing; ``--help`` shows all three). The environment value is
    parsed with ``type`` like the flag; a bad one is a :class:`CliError` naming the variable."""
    shown = "none" if default is None else default
    action = parser.add_argument(
        *flags, type=type, default=None, help=f"{help} (default: ${env}, else {shown})", **kwargs
    )
    table = dict(parser.get_default("env_defaults") or {})
    table[action.dest] = (env, default, type)
    parser.set_defaults(env_defaults=table)


def apply_env_defaults(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> None:
    """Fill every :func:`env_argument` option the command line left unset from the environment,
    else its default; ``args.from_environment`` maps each option taken from the environment to its
    variable. Raises :class:`CliError` for an environment value its parser refuses."""
    environ = os.environ if environ is None else environ
    args.from_environment = {}
    for dest, (env, default, parse) in (getattr(args, "env_defaults", None) or {}).items():
        if getattr(args, dest, None) is not None:
            continue
        raw = environ.get(env, "").strip()
        if not raw:
            setattr(args, dest, default)
            continue
        try:
            setattr(args, dest, parse(raw))
        except (ValueError, argparse.ArgumentTypeError) as error:
            raise CliError(f"environment variable {env}={raw!r}: {error}") from error
        args.from_environment[dest] = env


def _register_unavailable(subparsers, names: tuple[str, ...], module: str, error: Exception) -> None:
    for name in names:
        parser = subparsers.add_parser(name, help=f"(unavailable: {error})")
        parser.set_defaults(
            func=lambda _args, _m=module, _e=error: _fail(
                f"'{_m}' could not be imported ({_e}); install the matching extra, e.g. `make setup`"
            )
        )


def _fail(message: str) -> int:
    print(f"facecraft: error: {message}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facecraft", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"facecraft {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, names in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            _register_unavailable(subparsers, names, module_name, error)
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        apply_env_defaults(args)
        return int(args.func(args) or 0)
    except CliError as error:
        print(f"facecraft: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("facecraft: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
