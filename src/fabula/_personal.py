"""Personal data: fields sealed with a key per data subject, so that forgetting destroys the key.

The decisions live here, the I/O in the stores (`fabula._personal_store`):

- `personal(subject)` marks a field; `layout(cls)` reads the marks of a
  class once, checking them (`check_personal`, at registration).
- `KeyEncryptionKey` wraps and unwraps subject keys with the application's
  key; `Keyring` makes new subject keys and keeps unwrapped ones.
- `seal` replaces a payload's personal fields with one sealed group per
  subject under `"$personal"`; `unseal` puts them back, or None for a
  subject whose key is gone.

A sealed group is `[subject, [field names], base64(nonce + AES-GCM
ciphertext)]`. The ciphertext is bound (as associated data) to the event
id, stored type name, subject and field names, so it cannot be moved to
another event or field. The nonce is derived from the key, that binding
and the plaintext (a synthetic IV): the same event sealed twice gives the
same bytes, which is what lets a retried append be recognised, and two
different plaintexts never share a nonce.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias

import attrs

from fabula._converter import decode_json, encode_json
from fabula.exceptions import EventTypeError, PersonalDataError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "ENVELOPE",
    "PERSONAL",
    "KeyEncryptionKey",
    "KeyWrapper",
    "Keyring",
    "Layout",
    "SubjectKey",
    "check_personal",
    "gather",
    "layout",
    "like_pattern",
    "personal",
    "seal",
    "seal_gathered",
    "seal_group",
    "subjects_of",
    "unseal",
]

PERSONAL: Final = "fabula.personal"
"""The attrs metadata key `personal()` sets: the name of the field holding the subject."""

ENVELOPE: Final = "$personal"
"""The payload member that holds the sealed groups (no field can be named so)."""

_KEY_BYTES: Final = 32
_NONCE_BYTES: Final = 12
_WRAP_FORMAT: Final = b"\x01"


def personal(subject: str) -> dict[str, str]:
    """Attrs field metadata that marks a field as personal data of a data subject.

    Use it as `attrs.field(metadata=fabula.personal("customer_id"))`, where
    `"customer_id"` names the field of the same class that holds the
    subject's id (`"aggregate_id"` for the aggregate's own stream). The
    field's value is stored encrypted with that subject's key, and once
    the subject is forgotten it reads as None: its type must admit None.

    Raises:
        EventTypeError: `subject` is not a field name.
    """
    if not isinstance(subject, str) or not subject.isidentifier():
        msg = f"personal() needs the name of the field that holds the subject, not {subject!r}"
        raise EventTypeError(msg)
    return {PERSONAL: subject}


@attrs.frozen
class Layout:
    """The personal fields of a class, grouped by the field that names their subject.

    Attributes:
        groups: (subject field, personal field names) pairs, in field order.
    """

    groups: tuple[tuple[str, tuple[str, ...]], ...]


def check_personal(cls: type) -> Layout | None:
    """Check the personal fields of an attrs class and return its layout (None: it has none).

    Raises:
        EventTypeError: A subject field is missing or personal itself, or a
            personal field's type does not admit None.
    """
    attrs.resolve_types(cls)
    fields = attrs.fields(cls)
    marked = [(f, f.metadata[PERSONAL]) for f in fields if PERSONAL in f.metadata]
    for field in fields:
        inner = _nested_mark(field.type, set())
        if inner is not None and PERSONAL not in field.metadata:
            msg = (
                f"{cls.__qualname__}.{field.name} holds {inner}, which is marked personal: "
                f"mark {cls.__qualname__}.{field.name} itself instead (personal data is "
                f"sealed as whole fields of the event or aggregate)"
            )
            raise EventTypeError(msg)
    if not marked:
        return None
    names = {f.name: f for f in fields}
    groups: dict[str, list[str]] = {}
    for field, subject in marked:
        where = f"{cls.__qualname__}.{field.name}"
        if subject not in names:
            msg = f"{where} is personal data of {subject!r}, which is not a field of the class"
            raise EventTypeError(msg)
        if PERSONAL in names[subject].metadata:
            msg = f"{where}: its subject field {subject!r} is personal data itself"
            raise EventTypeError(msg)
        if not _admits_none(names[field.name].type):
            msg = (
                f"{where} is personal data, so it must admit None (declare it "
                f"`{_type_name(names[field.name].type)} | None`): it reads as None "
                f"once its subject is forgotten"
            )
            raise EventTypeError(msg)
        groups.setdefault(subject, []).append(field.name)
    return Layout(tuple((subject, tuple(group)) for subject, group in groups.items()))


_LAYOUTS: dict[type, Layout | None] = {}


def layout(cls: type) -> Layout | None:
    """`check_personal(cls)`, once per class."""
    try:
        return _LAYOUTS[cls]
    except KeyError:
        found = _LAYOUTS[cls] = check_personal(cls)
        return found


def _nested_mark(annotation: object, seen: set[int]) -> str | None:
    """`Class.field` of the first personal field in an attrs class `annotation` holds, or None."""
    if id(annotation) in seen:
        return None
    seen.add(id(annotation))
    if isinstance(annotation, type) and attrs.has(annotation):
        with contextlib.suppress(NameError):
            attrs.resolve_types(annotation)
        for field in attrs.fields(annotation):
            if PERSONAL in field.metadata:
                return f"{annotation.__qualname__}.{field.name}"
            found = _nested_mark(field.type, seen)
            if found is not None:
                return found
        return None
    for argument in typing.get_args(annotation):
        found = _nested_mark(argument, seen)
        if found is not None:
            return found
    return None


def _admits_none(annotation: object) -> bool:
    if annotation in (None, type(None), Any, object):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_admits_none(member) for member in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _admits_none(typing.get_args(annotation)[0])
    return False


def _type_name(annotation: object) -> str:
    return getattr(annotation, "__name__", None) or str(annotation)


class KeyWrapper(Protocol):
    """Wraps subject keys for storage and unwraps them: the application's key-encryption key.

    `KeyEncryptionKey` is one; a key-management service can be another
    (wrap and unwrap with its API). Both are called on the event loop, but
    rarely: once per new subject, and once per subject key a process first
    reads (a network call there holds the loop for its round trip).
    """

    def wrap(self, key: bytes, subject: str) -> bytes:
        """Encrypt a subject's key for storage."""
        ...

    def unwrap(self, wrapped: bytes, subject: str) -> bytes:
        """Decrypt what `wrap` returned for `subject`.

        Raises:
            PersonalDataError: It was not wrapped by this key for this subject.
        """
        ...


def _aesgcm() -> type[AESGCM]:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415
    except ImportError:
        msg = "personal data needs the cryptography package: pip install 'fabula[crypto]'"
        raise PersonalDataError(msg) from None
    return AESGCM


class KeyEncryptionKey:
    """A 256-bit AES-GCM key-encryption key: wraps each subject's key for storage.

    Give the key itself, or a function that returns it (called once, when
    the first subject key is wrapped or unwrapped). Keep it outside the
    database: whoever has the database and this key can read personal data
    that is not yet forgotten.

    Args:
        key: 32 bytes, or a callable that returns them.
        key_id: A name for this key, bound into every wrapped key, so that a
            wrapped key is never unwrapped with another one by mistake.

    Raises:
        PersonalDataError: The key (when given as bytes) is not 32 bytes.
    """

    def __init__(self, key: bytes | Callable[[], bytes], *, key_id: str = "1") -> None:
        if isinstance(key, bytes | bytearray):
            _check_key(bytes(key))
        elif not callable(key):
            msg = f"a key-encryption key is 32 bytes or a callable that returns them, not {key!r}"
            raise PersonalDataError(msg)
        self._source = key
        self.key_id = key_id

    def __repr__(self) -> str:
        return f"<KeyEncryptionKey {self.key_id!r}>"

    @classmethod
    def from_env(cls, name: str, *, key_id: str = "1") -> KeyEncryptionKey:
        """The key in environment variable `name`, as base64 text of 32 bytes.

        `python -c "import fabula; print(fabula.KeyEncryptionKey.generate())"`
        makes one.

        Raises:
            PersonalDataError: The variable is unset or does not hold such a key.
        """
        text = os.environ.get(name)
        if not text:
            msg = f"environment variable {name} does not hold a key-encryption key"
            raise PersonalDataError(msg)
        try:
            key = base64.b64decode(text, validate=True)
        except binascii.Error:
            msg = f"environment variable {name} is not base64 text of 32 bytes"
            raise PersonalDataError(msg) from None
        return cls(key, key_id=key_id)

    @staticmethod
    def generate() -> str:
        """A new random key, as the base64 text `from_env` reads."""
        return base64.b64encode(os.urandom(_KEY_BYTES)).decode()

    @functools.cached_property
    def _aead(self) -> AESGCM:
        key = self._source if isinstance(self._source, bytes | bytearray) else self._source()
        return _aesgcm()(_check_key(bytes(key)))

    def _bound(self, subject: str) -> bytes:
        return f"fabula-subject-key\x00{self.key_id}\x00{subject}".encode()

    def wrap(self, key: bytes, subject: str) -> bytes:
        """Encrypt `key` for `subject`: a format byte, a random nonce, the ciphertext."""
        nonce = os.urandom(_NONCE_BYTES)
        return _WRAP_FORMAT + nonce + self._aead.encrypt(nonce, key, self._bound(subject))

    def unwrap(self, wrapped: bytes, subject: str) -> bytes:
        """Decrypt a key `wrap` made for `subject`.

        Raises:
            PersonalDataError: It was made by another key, for another subject, or is damaged.
        """
        try:
            if wrapped[:1] != _WRAP_FORMAT:
                raise ValueError  # noqa: TRY301 - reported below
            nonce, sealed = wrapped[1 : 1 + _NONCE_BYTES], wrapped[1 + _NONCE_BYTES :]
            key = self._aead.decrypt(nonce, sealed, self._bound(subject))
        except Exception:  # noqa: BLE001 - cryptography's InvalidTag among others
            msg = (
                f"cannot unwrap the key of subject {subject!r} with key-encryption key "
                f"{self.key_id!r}: it was wrapped by another key, or is damaged"
            )
            raise PersonalDataError(msg) from None
        return key


def _check_key(key: bytes) -> bytes:
    if len(key) != _KEY_BYTES:
        msg = f"a key-encryption key is {_KEY_BYTES} bytes, not {len(key)}"
        raise PersonalDataError(msg)
    return key


@attrs.frozen(repr=False)
class SubjectKey:
    """One subject's key, unwrapped: its cipher and the key its nonces derive from."""

    aead: AESGCM
    nonce_key: bytes

    @classmethod
    def of(cls, key: bytes) -> SubjectKey:
        """The cipher and nonce key of a subject key."""
        nonce_key = hmac.digest(key, b"fabula-nonce", hashlib.sha256)
        return cls(_aesgcm()(key), nonce_key)


OpenKeys: TypeAlias = Mapping[str, SubjectKey | None]
"""Subject keys for a read: None for a subject that is forgotten; a subject absent has no key."""


class Keyring:
    """A store's subject keys: new ones wrapped for storage, stored ones unwrapped once.

    Unwrapped keys are kept by subject and wrapped bytes, so one that is
    destroyed in the store (forgotten) is never found again: a store looks
    up the wrapped keys of every read afresh, and drops a key it forgets.
    """

    _LIMIT: Final = 10_000

    def __init__(self, wrapper: KeyWrapper) -> None:
        self.wrapper = wrapper
        self.checked = False  # the store's keys are known to be this wrapper's
        self._unwrapped: dict[tuple[str, bytes], SubjectKey] = {}

    def new(self, subject: str) -> bytes:
        """A new random key for `subject`, wrapped for storage."""
        return self.wrapper.wrap(os.urandom(_KEY_BYTES), subject)

    def unwrap(self, subject: str, wrapped: bytes) -> SubjectKey:
        """The key `wrapped` holds for `subject`.

        Raises:
            PersonalDataError: The wrapper cannot unwrap it.
        """
        found = self._unwrapped.get((subject, wrapped))
        if found is None:
            found = SubjectKey.of(self.wrapper.unwrap(wrapped, subject))
            if len(self._unwrapped) >= self._LIMIT:
                self._unwrapped.clear()
            self._unwrapped[subject, wrapped] = found
        return found

    def drop(self, subject: str) -> None:
        """Forget `subject`'s unwrapped key, if it is kept (its stored key is destroyed)."""
        for cached in [cached for cached in self._unwrapped if cached[0] == subject]:
            del self._unwrapped[cached]


def subject_of(event: object, field: str) -> str:
    """The subject id in `field` of `event`, as text.

    Raises:
        PersonalDataError: It is None or empty.
    """
    value = getattr(event, field)
    if value is None or value == "":
        msg = f"{type(event).__qualname__}.{field} names the subject of personal data: it is empty"
        raise PersonalDataError(msg)
    return str(value)


def subjects_of(events: Iterable[object]) -> set[str]:
    """The subjects whose personal data `events` hold (None is no data; non-attrs objects: none)."""
    found: set[str] = set()
    for event in events:
        cls = type(event)
        if not attrs.has(cls):
            continue
        shape = layout(cls)
        if shape is not None:
            found.update(
                subject_of(event, field)
                for field, names in shape.groups
                if any(getattr(event, name) is not None for name in names)
            )
    return found


def _binding(bound_to: bytes, type_name: str, subject: str, names: Iterable[str]) -> bytes:
    return bound_to + f"\x00{type_name}\x00{subject}\x00{','.join(names)}".encode()


def seal_group(
    values: Mapping[str, Any], subject: str, *, bound_to: bytes, type_name: str, key: SubjectKey
) -> str:
    """One subject's values, encrypted and bound to where they are stored, as base64 text.

    `bound_to` and `type_name` say where: an event's id and stored name, or
    a snapshot's stream, version and aggregate type.
    """
    body = encode_json(dict(values)).encode()
    bound = _binding(bound_to, type_name, subject, values)
    nonce = hmac.digest(key.nonce_key, bound + b"\x00" + body, hashlib.sha256)[:_NONCE_BYTES]
    return base64.b64encode(nonce + key.aead.encrypt(nonce, body, bound)).decode()


def gather(fields: dict[str, Any], owner: object, shape: Layout) -> dict[str, Any]:
    """Move `fields`' personal members into groups under `ENVELOPE`, in clear (in place).

    Each group is `[subject, names, {name: value}]`; `seal_gathered` seals
    them (a snapshot's state is gathered by its codec and sealed by the
    store that keeps it). A subject whose fields are all None is left as it
    is: it has nothing to seal, and needs no key.
    """
    groups = []
    for subject_field, names in shape.groups:
        if all(fields.get(name) is None for name in names):
            continue
        values = {name: fields.pop(name) for name in names}
        groups.append([subject_of(owner, subject_field), list(names), values])
    if groups:
        fields[ENVELOPE] = groups
    return fields


def seal_gathered(
    fields: dict[str, Any], *, bound_to: bytes, type_name: str, keys: Mapping[str, SubjectKey]
) -> dict[str, Any]:
    """Seal the groups `gather` put under `ENVELOPE` with their subjects' keys (in place).

    Raises:
        PersonalDataError: No key is given for a subject.
    """
    for group in fields.get(ENVELOPE, ()):
        subject, _, values = group
        key = keys.get(subject)
        if key is None:
            msg = f"no key for subject {subject!r} was given to seal a {type_name}"
            raise PersonalDataError(msg)
        group[2] = seal_group(values, subject, bound_to=bound_to, type_name=type_name, key=key)
    return fields


def seal(
    fields: dict[str, Any],
    event: object,
    shape: Layout,
    *,
    bound_to: bytes,
    type_name: str,
    keys: Mapping[str, SubjectKey],
) -> dict[str, Any]:
    """Move `fields`' personal members into sealed groups under `ENVELOPE` (in place).

    `gather`, then `seal_gathered`.

    Raises:
        PersonalDataError: No key is given for a subject.
    """
    gathered = gather(fields, event, shape)
    return seal_gathered(gathered, bound_to=bound_to, type_name=type_name, keys=keys)


_ENVELOPE_KEY: Final = f'"{ENVELOPE}":'
_ENVELOPE_KEY_BYTES: Final = _ENVELOPE_KEY.encode()


def sealed_subjects(data: str | bytes) -> list[str]:
    """The subjects of a stored payload's sealed groups.

    The envelope is the payload's last member (`seal` puts it there), so
    only it is parsed; a payload of another shape is parsed whole.
    """
    key = _ENVELOPE_KEY if isinstance(data, str) else _ENVELOPE_KEY_BYTES
    at = data.rfind(key)  # type: ignore[arg-type] # key has data's type
    try:
        groups = decode_json(data[at + len(key) : -1]) if at >= 0 else None
    except ValueError:
        groups = None
    if not isinstance(groups, list):
        parsed = decode_json(data)
        groups = parsed.get(ENVELOPE) if isinstance(parsed, dict) else None
    if not isinstance(groups, list):
        return []
    return [g[0] for g in groups if isinstance(g, list) and g and isinstance(g[0], str)]


def unseal(
    payload: dict[str, Any], *, bound_to: bytes, type_name: str, keys: OpenKeys | None
) -> dict[str, Any]:
    """Put a payload's sealed fields back (in place): decrypted, or None where the key is gone.

    Raises:
        PersonalDataError: The payload holds personal data and the store has
            no key-encryption key (`keys` is None), or a group is damaged.
    """
    groups = payload.pop(ENVELOPE)
    if keys is None:
        msg = (
            f"a {type_name} event holds personal data: the store needs the "
            f"key-encryption key to read it (key_encryption_key=...)"
        )
        raise PersonalDataError(msg)
    if not isinstance(groups, list):
        raise _damaged(type_name, f"{ENVELOPE} is {type(groups).__name__}")
    for group in groups:
        subject, names, sealed = _parts(group, type_name)
        if subject not in keys:
            msg = (
                f"a {type_name} event holds personal data of subject {subject!r}, who "
                f"has no key in the store: is its subject-key table a partial copy?"
            )
            raise PersonalDataError(msg)
        key = keys[subject]
        if key is None:  # forgotten
            payload.update(dict.fromkeys(names))
            continue
        bound = _binding(bound_to, type_name, subject, names)
        try:
            raw = binascii.a2b_base64(sealed)
            plain = decode_json(key.aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], bound))
        except Exception as exc:  # noqa: BLE001 - a damaged or moved group, whatever the cause
            raise _damaged(type_name, repr(exc)) from None
        payload.update(plain)
    return payload


def _parts(group: object, type_name: str) -> tuple[str, list[str], str]:
    """A sealed group's subject, field names and ciphertext, checked for their shape."""
    if isinstance(group, list) and len(group) == 3:  # noqa: PLR2004 - subject, names, sealed
        subject, names, sealed = group
        if (
            isinstance(subject, str)
            and isinstance(names, list)
            and all(isinstance(name, str) for name in names)
            and isinstance(sealed, str)
        ):
            return subject, names, sealed
    raise _damaged(type_name, f"a group is {group!r:.60}")


def _damaged(type_name: str, detail: str) -> PersonalDataError:
    return PersonalDataError(
        f"a {type_name} event's personal data cannot be opened: it is damaged ({detail})"
    )


def like_pattern(text: str) -> str:
    """A SQL LIKE pattern (escape character: backslash) matching any text that contains `text`."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
