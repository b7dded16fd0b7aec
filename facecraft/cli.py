"""The ``facecraft`` console command.

Each feature package owns its subcommands: it exposes ``register(subparsers)`` in a ``cli``
module, which adds a parser whose ``func`` default takes the parsed ``argparse.Namespace`` and
returns an exit code. This file only wires them together, so heavy imports (torch, tritonclient)
happen only when their subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from facecraft import __version__

# (module path, subcommands it registers) — modules are imported lazily when building the parser;
# a module whose optional dependencies are missing still shows its subcommands with a hint.
SUBCOMMAND_MODULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("facecraft.export.cli", ("export",)),
    ("facecraft.runtime.cli", ("serve", "repo")),
    ("facecraft.client.cli", ("process", "bench", "perf-data")),
)


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2 (or ``exit_code``)."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


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
        return int(args.func(args) or 0)
    except CliError as error:
        print(f"facecraft: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("facecraft: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
