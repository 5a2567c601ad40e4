"""Who is calling: bearer tokens (JWT, HS256), the roles they carry, and a rate limit per caller.

A token's claims are `sub` (for a customer, the customer id), `role`
(`admin` or `customer`), `iat` and `exp`. `Tokens` issues and checks them
with one shared secret (`ORDERS_JWT_SECRET`); `orders token` prints one for
development and tests.

What each role may do is decided in `orders.api` (routes) and
`orders.handlers` (an order's owner); see docs/production.md.
"""

import enum
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

import attrs
import jwt

__all__ = [
    "MIN_SECRET_LENGTH",
    "NOBODY",
    "AuthError",
    "Caller",
    "Forbidden",
    "RateLimit",
    "RateLimited",
    "Role",
    "Tokens",
]

MIN_SECRET_LENGTH = 32
"""The shortest secret accepted, in characters: HS256 wants at least 256 bits of key."""

_ALGORITHM = "HS256"
_IDLE = 60.0  # seconds after which a caller's full bucket may be forgotten


class Role(enum.StrEnum):
    """What a caller may do."""

    ADMIN = "admin"
    """Manages customers and products, and may read and act on every order."""
    CUSTOMER = "customer"
    """Opens, changes and reads their own orders; reads products."""


class AuthError(Exception):
    """No valid token: answered 401 with `WWW-Authenticate: Bearer`."""


class Forbidden(Exception):  # noqa: N818 - it reads as the answer
    """The caller is known but may not do this: answered 403."""


@attrs.frozen
class Caller:
    """The authenticated caller of a request.

    Attributes:
        subject: The token's `sub`: an administrator's name, or a customer's id.
        role: What they may do.
    """

    subject: str
    role: Role

    @property
    def customer_id(self) -> UUID | None:
        """The customer this caller is, or None for an administrator."""
        return UUID(self.subject) if self.role is Role.CUSTOMER else None

    @property
    def is_admin(self) -> bool:
        """Whether the caller is an administrator."""
        return self.role is Role.ADMIN

    def scoped(self, key: str | None) -> str | None:
        """`key` made this caller's own, so one caller's key never answers another's request."""
        return None if key is None else f"{self.role}:{self.subject}:{key}"


NOBODY = Caller(subject="anonymous", role=Role.ADMIN)
"""The caller of every request when authentication is off (`orders serve --no-auth`)."""


@attrs.define(repr=False)
class Tokens:
    """Issues and checks the service's bearer tokens.

    Args:
        secret: The HS256 key, at least `MIN_SECRET_LENGTH` characters.
        clock: The time tokens are issued at (tests issue expired ones);
            `check` compares `exp` with the system clock.

    Raises:
        ValueError: The secret is too short.
    """

    secret: str
    clock: Callable[[], datetime] = attrs.field(default=lambda: datetime.now(UTC))

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.secret, str) or len(self.secret) < MIN_SECRET_LENGTH:
            msg = f"the token secret must be at least {MIN_SECRET_LENGTH} characters long"
            raise ValueError(msg)

    def __repr__(self) -> str:
        return "<Tokens (HS256)>"

    def issue(self, role: Role, subject: str, ttl: timedelta) -> str:
        """A token for `subject` in `role`, valid for `ttl`.

        Raises:
            ValueError: A customer's subject is not a UUID, or `ttl` is not positive.
        """
        if role is Role.CUSTOMER:
            UUID(subject)  # raises ValueError
        if not subject or len(subject) > 64:  # noqa: PLR2004 - see Caller.scoped
            msg = "a token's subject must be 1 to 64 characters long"
            raise ValueError(msg)
        if ttl <= timedelta(0):
            msg = f"a token's lifetime must be positive, not {ttl}"
            raise ValueError(msg)
        now = self.clock()
        claims = {"sub": subject, "role": str(role), "iat": now, "exp": now + ttl}
        return jwt.encode(claims, self.secret, algorithm=_ALGORITHM)

    def check_header(self, authorization: str) -> Caller:
        """The caller an `Authorization: Bearer <token>` header's value stands for.

        Raises:
            AuthError: It is not a bearer token, or the token is not valid.
        """
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("this request needs a bearer token (Authorization: Bearer ...)")
        return self.check(token.strip())

    def check(self, token: str) -> Caller:
        """The caller `token` stands for.

        Raises:
            AuthError: It is malformed, forged, expired, or its claims are not ours.
        """
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[_ALGORITHM],
                options={"require": ["sub", "role", "exp", "iat"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("the token has expired") from exc
        except jwt.PyJWTError as exc:
            raise AuthError("the token is not valid") from exc
        try:
            role = Role(claims["role"])
            caller = Caller(subject=str(claims["sub"]), role=role)
            _ = caller.customer_id  # a customer's subject must be their id
        except ValueError as exc:
            raise AuthError("the token's claims are not valid") from exc
        return caller


@attrs.define
class RateLimit:
    """At most `rate` requests a second per caller, in bursts of up to `rate` (a token bucket).

    Callers idle for a minute are forgotten once more than 10,000 are known.

    Args:
        rate: Requests a second.
        clock: Seconds, monotonic (for tests).
    """

    rate: float
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.rate, int | float) or not math.isfinite(self.rate) or self.rate <= 0:
            msg = f"a rate limit must be a positive number of requests a second, not {self.rate!r}"
            raise ValueError(msg)

    def take(self, who: str) -> None:
        """Count one request of `who`.

        Raises:
            RateLimited: `who` is over the limit; the error says when to retry.
        """
        now = self.clock()
        burst = max(1.0, self.rate)
        tokens, last = self._buckets.get(who, (burst, now))
        tokens = min(burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[who] = (tokens, now)
            raise RateLimited(math.ceil((1 - tokens) / self.rate))
        self._buckets[who] = (tokens - 1, now)
        if len(self._buckets) > 10_000:  # noqa: PLR2004 - forget idle callers now and then
            self._forget_idle(now)

    def _forget_idle(self, now: float) -> None:
        full = [who for who, (_, last) in self._buckets.items() if now - last > _IDLE]
        for who in full:
            del self._buckets[who]


class RateLimited(Exception):  # noqa: N818 - it reads as what happened
    """Too many requests: answered 429 with `Retry-After`.

    Attributes:
        retry_after: Whole seconds until the caller may try again.
    """

    def __init__(self, retry_after: int) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(f"too many requests; try again in {self.retry_after} s")
