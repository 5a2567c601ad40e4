"""The `orders` command: `serve`, `token`, `demo` and `rebuild-read-model`."""

import argparse
import asyncio
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TextIO

import fabula

from . import telemetry
from .auth import MIN_SECRET_LENGTH, RateLimit, Role, Tokens
from .service import KEK_VARIABLE, OrdersService, is_postgres_url

__all__ = ["SECRET_VARIABLE", "main"]

DEMO_DATABASE = "orders-demo.db"  # where `orders demo` writes, in the current directory
SECRET_VARIABLE = "ORDERS_JWT_SECRET"  # noqa: S105 - the name of a variable, not a secret
"""The environment variable that holds the token secret."""

logger = logging.getLogger("orders")


class UsageError(Exception):
    """A bad command-line argument, reported in one line with exit code 2."""


def database_path(value: str) -> str:
    """Check `--database`: a SQLite path, a `sqlite:///` URL or a `postgresql://` URL.

    Returns:
        The SQLite file path, or the PostgreSQL URL as given.

    Raises:
        UsageError: It names a database this service cannot open.
    """
    if is_postgres_url(value):
        from fabula.postgres import check_conninfo  # noqa: PLC0415 - an optional driver

        try:
            check_conninfo(value)
        except ValueError as exc:
            raise UsageError(f"--database: {exc}") from None  # the cause quotes the password
        return value
    if value.startswith("sqlite:///"):
        value = value.removeprefix("sqlite:///")
    elif "://" in value:
        raise UsageError(
            f"--database must be a SQLite file path, a sqlite:/// URL or a postgresql:// URL, "
            f"not {value!r}"
        )
    if not value:
        raise UsageError("--database must not be empty")
    parent = Path(value).resolve().parent
    if not parent.is_dir():
        raise UsageError(f"cannot create {value!r}: the directory {str(parent)!r} does not exist")
    return value


def _check_schema(value: str) -> None:
    if not _SCHEMA.fullmatch(value):
        msg = f"--schema must be a plain identifier (letters, digits, _), not {value!r}"
        raise UsageError(msg)
    if value.lower() == "information_schema" or value.lower().startswith("pg_"):
        msg = f"--schema {value!r} belongs to PostgreSQL itself: choose another"
        raise UsageError(msg)


_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")


def _tokens(args: argparse.Namespace) -> Tokens | None:
    """The token checker, from --jwt-secret or ORDERS_JWT_SECRET; None for `serve --no-auth`."""
    secret = args.jwt_secret or os.environ.get(SECRET_VARIABLE)
    if getattr(args, "no_auth", False):
        if secret:
            raise UsageError("--no-auth and a token secret contradict each other: choose one")
        return None
    if not secret:
        raise UsageError(
            f"no token secret: set {SECRET_VARIABLE} or give --jwt-secret "
            f"(at least {MIN_SECRET_LENGTH} characters), or --no-auth for local development"
        )
    try:
        return Tokens(secret)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _key_encryption_key() -> fabula.KeyEncryptionKey:
    """The key that wraps customers' keys, from ORDERS_KEK."""
    try:
        return fabula.KeyEncryptionKey.from_env(KEK_VARIABLE)
    except fabula.PersonalDataError:
        raise UsageError(
            f"no key-encryption key: set {KEK_VARIABLE} to base64 of 32 random bytes, made with "
            f"python -c 'import fabula; print(fabula.KeyEncryptionKey.generate())' "
            f"(keep it apart from the database and its backups)"
        ) from None


def _rate(value: str) -> RateLimit:
    """Parse `--rate-limit`: `N/s`, N requests a second per caller."""
    number, _, unit = value.partition("/")
    try:
        rate = float(number)
        if unit != "s":
            raise ValueError(value)  # noqa: TRY301 - reported below
        return RateLimit(rate)
    except ValueError:
        msg = f"--rate-limit must look like 20/s (requests a second per caller), not {value!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _broker_url(value: str) -> str:
    scheme = value.partition("://")[0]
    if scheme not in {"nats", "tls", "amqp", "amqps"} or not value.partition("://")[2]:
        msg = f"--publish takes a nats:// or amqp:// URL, not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    needed = "nats" if scheme in {"nats", "tls"} else "aio_pika"
    try:
        __import__(needed)
    except ImportError:
        extra = "nats" if needed == "nats" else "rabbitmq"
        msg = f"{value} needs fabula's {extra} extra: pip install 'fabula[{extra}]'"
        raise argparse.ArgumentTypeError(msg) from None
    return value


async def _serve(args: argparse.Namespace) -> int:
    """Open the service first, so a database that cannot be opened is one line; then serve."""
    import uvicorn  # noqa: PLC0415 - only `serve` needs the server
    from uvicorn.config import LOGGING_CONFIG  # noqa: PLC0415

    from .api import create_app  # noqa: PLC0415
    from .logs import json_log_config  # noqa: PLC0415

    database = database_path(args.database)
    tokens = _tokens(args)
    key = _key_encryption_key()
    metered = telemetry.available()
    if args.otlp_endpoint is not None and not metered:
        raise UsageError("--otlp-endpoint needs the otel extra: pip install 'orders[otel]'")
    if metered:
        telemetry.set_up(args.otlp_endpoint)
    draft_ttl = timedelta(seconds=args.draft_ttl)
    opening = OrdersService.open(
        database, schema=args.schema, draft_ttl=draft_ttl, publish=args.publish,
        key_encryption_key=key,
    )  # fmt: skip
    async with opening as service:
        app = create_app(
            service,
            tokens=tokens,
            rate_limit=args.rate_limit,
            ready_max_lag=args.ready_max_lag,
            metrics=metered,
        )
        config = uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            log_config=json_log_config(args.log_level)
            if args.log_format == "json"
            else LOGGING_CONFIG,
            limit_concurrency=args.max_connections,
            timeout_keep_alive=args.keep_alive,
            h11_max_incomplete_event_size=args.max_header_bytes,
            server_header=False,
        )
        if tokens is None:
            logger.warning(
                "authentication is OFF (--no-auth): every request acts as an administrator; "
                "never expose this server"
            )
        await uvicorn.Server(config).serve()
    return 0


def _token(args: argparse.Namespace) -> int:
    tokens = _tokens(args)
    assert tokens is not None
    role, subject = (Role.ADMIN, args.admin_name) if args.admin else (Role.CUSTOMER, args.customer)
    try:
        print(tokens.issue(role, subject, timedelta(seconds=args.ttl)))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return 0


def _progress_bar(stream: TextIO) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    started = time.monotonic()
    width = max(10, min(40, shutil.get_terminal_size((80, 20)).columns - 40))

    def report(done: int, total: int) -> None:
        fraction = 1.0 if total <= 0 else min(1.0, done / total)
        filled = int(width * fraction)
        elapsed = max(time.monotonic() - started, 1e-9)
        stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction:6.1%} "
            f"{done}/{total} positions, {done / elapsed:,.0f}/s"
        )
        stream.flush()

    def finish() -> None:
        stream.write("\n")
        stream.flush()

    return report, finish


async def _rebuild(database: str, schema: str) -> int:
    key = _key_encryption_key()
    report, finish = _progress_bar(sys.stderr)
    async with OrdersService.open(database, schema=schema, key_encryption_key=key) as service:
        position = await service.rebuild_read_model(progress=report)
    finish()
    print(f"rebuilt the order read model up to position {position}")
    return 0


_DATABASE_HELP = "a SQLite file, or a postgresql:// URL"


def _add_database(parser: argparse.ArgumentParser, default: str | None, help_default: str) -> None:
    parser.add_argument(
        "--database", default=default, help=f"{_DATABASE_HELP} (default: {help_default})"
    )
    parser.add_argument(
        "--schema",
        default="public",
        help="on PostgreSQL, the schema that holds the service's tables (default: public)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orders", description="The fabula reference order service."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="the port to listen on")
    _add_database(serve, "orders.db", "./orders.db")
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="json: one JSON object per line, with trace and span ids (default: text)",
    )
    _add_secret(serve)
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="serve without authentication: everyone is an administrator (development only)",
    )
    serve.add_argument(
        "--rate-limit",
        type=_rate,
        default=None,
        metavar="N/s",
        help="at most N requests a second per caller (429 beyond); default: no limit",
    )
    serve.add_argument(
        "--max-connections",
        type=_positive,
        default=200,
        help="connections served at once; more are answered 503 (default: 200)",
    )
    serve.add_argument(
        "--keep-alive",
        type=_positive,
        default=5,
        metavar="SECONDS",
        help="how long an idle connection is kept open (default: 5)",
    )
    serve.add_argument(
        "--draft-ttl",
        type=_positive,
        default=86_400,
        metavar="SECONDS",
        help="a draft with no change for this long is cancelled as abandoned (default: 86400)",
    )
    serve.add_argument(
        "--otlp-endpoint",
        default=None,
        metavar="URL",
        help="export traces and metrics over OTLP/HTTP to this collector (http://host:4318)",
    )
    serve.add_argument(
        "--ready-max-lag",
        type=_positive,
        default=10,
        metavar="SECONDS",
        help="GET /ready answers 503 while the read model is this far behind (default: 10)",
    )
    serve.add_argument(
        "--publish",
        action="append",
        type=_broker_url,
        default=[],
        metavar="URL",
        help=(
            "publish the order events (orders.v1.*, CloudEvents) to this broker: "
            "nats://HOST:PORT (JetStream stream ORDERS) or amqp://USER:PASS@HOST:PORT/ "
            "(RabbitMQ exchange orders); may be given twice"
        ),
    )
    serve.add_argument(
        "--max-header-bytes",
        type=_positive,
        default=16 * 1024,
        metavar="BYTES",
        help="the largest request line and headers accepted (default: 16384)",
    )

    token = commands.add_parser("token", help="print a bearer token (for development and tests)")
    _add_secret(token)
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--admin", action="store_true", help="an administrator's token")
    who.add_argument("--customer", metavar="UUID", help="the token of the customer with this id")
    token.add_argument(
        "--admin-name", default="admin", help="the administrator's name in the token (sub)"
    )
    token.add_argument(
        "--ttl", type=_positive, default=3600, metavar="SECONDS", help="lifetime (default: 3600)"
    )

    demo = commands.add_parser("demo", help="run a scripted session against a fresh database")
    _add_database(demo, None, f"./{DEMO_DATABASE}, made afresh")

    rebuild = commands.add_parser(
        "rebuild-read-model", help="rebuild the order read model from the events"
    )
    _add_database(rebuild, "orders.db", "./orders.db")
    return parser


def _add_secret(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jwt-secret",
        default=None,
        help=f"the token secret (default: ${SECRET_VARIABLE}); prefer the variable, "
        "which other users cannot see in the process list",
    )


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        msg = f"expected a whole number of at least 1, not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return int(value)


def _run(args: argparse.Namespace) -> int:
    if args.command == "token":
        return _token(args)
    _check_schema(args.schema)
    if args.command == "serve":
        return asyncio.run(_serve(args))
    if args.command == "demo":
        from .demo import run_demo  # noqa: PLC0415 - only the demo needs an HTTP client

        if args.database is None:
            path = Path(DEMO_DATABASE)
            for leftover in (path, *(Path(f"{path}{end}") for end in ("-wal", "-shm", "-journal"))):
                leftover.unlink(missing_ok=True)  # the last demo's: each demo starts afresh
            code = asyncio.run(run_demo(str(path)))
            print(f"\nIts events are in ./{path}: look inside with `fabula --store {path} stats`")
            return code
        return asyncio.run(run_demo(database_path(args.database), schema=args.schema))
    database = database_path(args.database)
    if not is_postgres_url(database) and not Path(database).exists():
        raise UsageError(f"there is no database {database!r}")
    return asyncio.run(_rebuild(database, args.schema))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `orders` command; return its exit code."""
    args = _build_parser().parse_args(argv)
    try:
        return _run(args)
    except UsageError as exc:
        print(f"orders: error: {exc}", file=sys.stderr)
        return 2
    except fabula.StoreError as exc:
        print(f"orders: error: {_first_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
