"""``python -m facecraft.gateway``: serve the gateway with uvicorn (settings from ``FACECRAFT_*``)."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn
from pydantic import ValidationError

from facecraft.gateway.app import create_app
from facecraft.gateway.settings import GatewaySettings, describe_settings_error


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m facecraft.gateway", description=__doc__)
    parser.add_argument("--host", help="bind address (default FACECRAFT_HOST or 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (default FACECRAFT_PORT or 8080)")
    parser.add_argument("--triton-url", help="Triton gRPC host:port (default FACECRAFT_TRITON_URL)")
    args = parser.parse_args(argv)
    overrides = {
        key: value
        for key, value in {"host": args.host, "port": args.port, "triton_url": args.triton_url}.items()
        if value is not None
    }
    try:
        settings = GatewaySettings(**overrides)
    except ValidationError as error:
        print(f"python -m facecraft.gateway: error: {describe_settings_error(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
