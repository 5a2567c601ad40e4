"""The `shipping` command: `serve` the API while consuming order events; `demo` both services."""

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from orders.auth import MIN_SECRET_LENGTH, Tokens
from orders.cli import SECRET_VARIABLE

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shipping", description="A second fabula service, fed by the order service's events."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the HTTP API and consume order events")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    serve.add_argument("--port", type=int, default=8001, help="the port to listen on")
    serve.add_argument("--database", default="shipping.db", help="its SQLite file")
    serve.add_argument(
        "--consume",
        action="append",
        required=True,
        type=_broker_url,
        metavar="URL",
        help="take the order events from this broker (nats://... or amqp://...)",
    )
    serve.add_argument(
        "--name",
        default="shipping",
        help="the durable consumer (JetStream) or queue prefix (RabbitMQ) (default: shipping)",
    )
    serve.add_argument(
        "--jwt-secret", default=None, help=f"the token secret (default: ${SECRET_VARIABLE})"
    )
    serve.add_argument(
        "--no-auth", action="store_true", help="serve without authentication (development only)"
    )
    serve.add_argument("--log-level", default="info", choices=["error", "warning", "info", "debug"])
    demo = commands.add_parser("demo", help="run the order and shipping services talking")
    demo.add_argument(
        "--broker",
        default="nats://127.0.0.1:4222",
        metavar="URL",
        help="the broker between them (default: nats://127.0.0.1:4222)",
    )
    return parser


def _broker_url(value: str) -> str:
    scheme, _, rest = value.partition("://")
    if scheme not in {"nats", "tls", "amqp", "amqps"} or not rest:
        msg = f"--consume takes a nats:// or amqp:// URL, not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _tokens(args: argparse.Namespace) -> Tokens | None:
    secret = args.jwt_secret or os.environ.get(SECRET_VARIABLE)
    if args.no_auth:
        if secret:
            raise SystemExit("shipping: error: --no-auth and a token secret contradict each other")
        return None
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        raise SystemExit(
            f"shipping: error: set {SECRET_VARIABLE} (at least {MIN_SECRET_LENGTH} characters) "
            "or give --no-auth for local development"
        )
    return Tokens(secret)


async def _serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - only `serve` needs the server

    from .api import create_app  # noqa: PLC0415
    from .service import ShippingService  # noqa: PLC0415

    tokens = _tokens(args)
    async with ShippingService.open(args.database, consume=args.consume, name=args.name) as service:
        app = create_app(service, tokens=tokens)
        config = uvicorn.Config(
            app, host=args.host, port=args.port, log_level=args.log_level, server_header=False
        )
        await uvicorn.Server(config).serve()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `shipping` command; return its exit code."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        return asyncio.run(_serve(args))
    from .demo import run_demo  # noqa: PLC0415

    return asyncio.run(run_demo(args.broker))


if __name__ == "__main__":
    sys.exit(main())
