"""What a store does for personal data: keys for appends and reads, and `forget`.

`PersonalSide` is a mixin of fabula's stores. It decides (which subjects,
which keys, what a forgotten subject means) and leaves three pieces of
I/O to the store: `_load_keys`, `_add_keys` and `_forget_subject`. The
keys live in the store's own database, wrapped by the application's
key-encryption key (`fabula.KeyEncryptionKey`); the sealing itself is
`fabula._personal`'s.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Protocol, runtime_checkable

import attrs

from fabula._converter import decode_json, encode_json
from fabula._deletion import TOMBSTONE, StreamDeleted
from fabula._events import DomainEvent, JSONObject, JSONValue, event
from fabula._personal import (
    ENVELOPE,
    Keyring,
    KeyWrapper,
    OpenKeys,
    SubjectKey,
    layout,
    seal_gathered,
    sealed_subjects,
    subject_of,
    subjects_of,
    unseal,
)
from fabula._serialization import EventSerializer
from fabula._snapshots import Snapshot
from fabula._store import ExpectedVersion, RecordedEvent, StreamAppend
from fabula._stored import PendingAppend, prepare_append
from fabula.exceptions import PersonalDataError, SubjectForgottenError

__all__ = ["FORGOTTEN_STREAM_PREFIX", "PersonalDataStore", "PersonalSide", "SubjectForgotten"]

FORGOTTEN_STREAM_PREFIX: Final = "fabula.forgotten-"
"""The stream of a subject's `SubjectForgotten` event is this prefix and the subject's id."""

_CANARY: Final = ""  # the subject of the key that checks the key-encryption key

_MARKER: Final = f'"{ENVELOPE}"'
_MARKER_BYTES: Final = _MARKER.encode()


@event("fabula.SubjectForgotten")
@attrs.frozen(kw_only=True)
class SubjectForgotten(DomainEvent[str]):
    """A data subject was forgotten: their key is destroyed, their personal data unreadable.

    Projections and reactions that keep what they derived from a subject's
    personal data (a customer's name in a read model, a mailing list) purge
    it when they handle this event. It is stored in a stream of its own,
    `fabula.forgotten-<subject>`, once per subject.

    Attributes:
        subject: The forgotten subject's id.
    """

    subject: str


@runtime_checkable
class PersonalDataStore(Protocol):
    """A store that keeps personal data sealed per subject, and can forget a subject."""

    async def forget(self, subject: str) -> bool:
        """Destroy `subject`'s key and record `SubjectForgotten` (see `PersonalSide.forget`)."""
        ...

    async def export(self, subject: str) -> JSONObject:
        """Everything the store holds about `subject`, in clear (see `PersonalSide.export`)."""
        ...


def _events_in(appends: Sequence[StreamAppend]) -> Iterable[object]:
    for item in appends:
        if isinstance(item, StreamAppend):
            yield from item.events


def _subjects(events: Iterable[object]) -> set[str]:
    try:
        return subjects_of(events)
    except TypeError:  # not a sequence of events: prepare_append says what is wrong
        return set()


class PersonalSide(abc.ABC):
    """The personal-data side of a store: subject keys in, sealed payloads out, `forget`.

    A store sets `serializer` and `_keyring` (None without a key-encryption
    key) and implements the three I/O methods.
    """

    serializer: EventSerializer
    _keyring: Keyring | None

    def _make_keyring(self, key_encryption_key: KeyWrapper | None) -> Keyring | None:
        """The store's keyring (None without a key); fabula's own events registered to be read."""
        registry = self.serializer.registry
        for name, cls in (
            ("fabula.SubjectForgotten", SubjectForgotten),
            (TOMBSTONE, StreamDeleted),
        ):
            if registry.by_name(name) is None:
                registry.register(cls, name)
        if key_encryption_key is None:
            return None
        if not (
            callable(getattr(key_encryption_key, "wrap", None))
            and callable(getattr(key_encryption_key, "unwrap", None))
        ):
            msg = (
                f"key_encryption_key must have wrap() and unwrap() (a "
                f"fabula.KeyEncryptionKey), not {key_encryption_key!r}"
            )
            raise PersonalDataError(msg)
        return Keyring(key_encryption_key)

    @abc.abstractmethod
    async def _load_keys(self, subjects: Collection[str]) -> dict[str, bytes | None]:
        """The stored wrapped keys of `subjects`: None for a forgotten one, absent if none."""

    @abc.abstractmethod
    async def _add_keys(self, keys: Mapping[str, bytes]) -> dict[str, bytes | None]:
        """Store each key unless its subject has one (or is forgotten); return what is stored."""

    @abc.abstractmethod
    async def _forget_subject(self, subject: str, part: PendingAppend) -> bool:
        """In one transaction: mark `subject` forgotten (its key destroyed) and store `part`.

        Returns False, storing nothing, if the subject was forgotten already.
        """

    @abc.abstractmethod
    async def _save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep `snapshot` (its personal data sealed) unless a later one is stored."""

    @abc.abstractmethod
    async def _load_snapshot(self, stream_id: str) -> Snapshot | None:
        """The latest snapshot of `stream_id` as stored, or None."""

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep `snapshot` unless one of a later version is stored (see `SnapshotStore`).

        The personal data `SnapshotCodec` gathered in its state is sealed
        first, as an event's is.

        Raises:
            PersonalDataError: It holds personal data and the store has no
                key-encryption key.
            SubjectForgottenError: It holds data of a forgotten subject.
        """
        await self._save_snapshot(await self._seal_snapshot(snapshot))

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """Return the latest snapshot of `stream_id`, or None (see `SnapshotStore`).

        Its personal data is opened: in clear, or None once forgotten.
        """
        found = await self._load_snapshot(stream_id)
        if found is None or _MARKER not in found.state:
            return found
        state = decode_json(found.state)
        if ENVELOPE not in state:  # the marker's text was in a value
            return found
        keys = await self._keys_to_open([found.state])
        unseal(state, bound_to=_snapshot_binding(found), type_name=found.aggregate_type, keys=keys)
        return attrs.evolve(found, state=encode_json(state))

    async def _seal_snapshot(self, snapshot: Snapshot) -> Snapshot:
        if _MARKER not in snapshot.state:
            return snapshot
        state = decode_json(snapshot.state)
        groups = state.get(ENVELOPE)
        if not groups:  # the marker's text was in a value
            return snapshot
        keys = await self._keys_for({group[0] for group in groups})
        seal_gathered(
            state, bound_to=_snapshot_binding(snapshot), type_name=snapshot.aggregate_type,
            keys=keys,
        )  # fmt: skip
        return attrs.evolve(snapshot, state=encode_json(state))

    def _require_keyring(self) -> Keyring:
        if self._keyring is None:
            msg = (
                "these events hold personal data: open the store with a "
                "key_encryption_key (fabula.KeyEncryptionKey) to store or read it"
            )
            raise PersonalDataError(msg)
        return self._keyring

    async def _sealing(
        self, events: Sequence[DomainEvent[Any]]
    ) -> tuple[Sequence[DomainEvent[Any]], dict[str, SubjectKey] | None]:
        """`events` (made a tuple if they are a one-pass iterator) and the keys to seal them with.

        The keys are None when they hold no personal data; a subject seen
        for the first time gets a new key.

        Raises:
            PersonalDataError: There is personal data and no key-encryption key.
            SubjectForgottenError: A subject is forgotten.
        """
        if isinstance(events, Iterator):  # typed a Sequence; validate_append takes any iterable
            events = tuple(events)
        subjects = _subjects(events)
        return events, (await self._keys_for(subjects) if subjects else None)

    async def _keys_for(self, subjects: set[str]) -> dict[str, SubjectKey]:
        """Each subject's key, a new one for a subject seen for the first time.

        Raises:
            PersonalDataError: There is no key-encryption key.
            SubjectForgottenError: A subject is forgotten.
        """
        keyring = self._require_keyring()
        stored = await self._load_keys(subjects)
        missing = sorted(subjects - stored.keys())
        if missing:
            await self._check_keyring(keyring)
            stored.update(await self._add_keys({s: keyring.new(s) for s in missing}))
        keys = {}
        for subject in sorted(subjects):
            wrapped = stored.get(subject)
            if wrapped is None:
                raise SubjectForgottenError(subject)
            keys[subject] = keyring.unwrap(subject, wrapped)
        return keys

    async def _check_keyring(self, keyring: Keyring) -> None:
        """Make sure the store's keys were wrapped by this key-encryption key, before it wraps more.

        The check is a canary: a key stored under the empty subject (no real
        subject is empty), wrapped by the first key-encryption key that made
        a key here, unwrapped once per process.

        Raises:
            PersonalDataError: Another key-encryption key wrapped this store's keys.
        """
        if keyring.checked:
            return
        stored = await self._load_keys([_CANARY])
        wrapped = stored.get(_CANARY)
        if wrapped is None:
            wrapped = (await self._add_keys({_CANARY: keyring.new(_CANARY)}))[_CANARY]
        if wrapped is not None:
            keyring.unwrap(_CANARY, wrapped)
        keyring.checked = True

    async def _keys_to_many(self, appends: Sequence[StreamAppend]) -> dict[str, SubjectKey] | None:
        """The keys to seal the events of an `append_many`'s parts with (see `_sealing`)."""
        subjects = _subjects(_events_in(appends))
        return await self._keys_for(subjects) if subjects else None

    async def _keys_to_open(self, payloads: Iterable[str | bytes]) -> OpenKeys | None:
        """The keys to read payloads with: those of their sealed subjects that are not forgotten.

        None when the store has no key-encryption key (reading a sealed
        payload then fails with `PersonalDataError`).
        """
        subjects: set[str] = set()
        for data in payloads:
            if (_MARKER in data) if isinstance(data, str) else (_MARKER_BYTES in data):
                subjects.update(sealed_subjects(data))
        if self._keyring is None:
            return None
        if not subjects:
            return {}
        keyring = self._keyring
        stored = await self._load_keys(subjects)
        # None: forgotten. A subject without a row at all is left out: reading
        # its data then fails (a damaged or partial copy), rather than pass as forgotten.
        return {s: None if w is None else keyring.unwrap(s, w) for s, w in stored.items()}

    @abc.abstractmethod
    async def _events_holding(self, text: str) -> list[RecordedEvent]:
        """Every event whose stored payload contains `text`, decoded, in position order."""

    async def export(self, subject: str) -> JSONObject:
        """Everything the store holds about `subject`, in clear, as a JSON object (right of access).

        `{"subject": ..., "forgotten": ..., "events": [...]}`: each event that
        holds their personal data, with its place (position, stream, version,
        stored type, time) and their fields. Once forgotten, `"forgotten"` is
        true and those fields are null. It reads the whole log.

        Raises:
            PersonalDataError: `subject` is not a non-empty string, or the
                store has no key-encryption key.
        """
        _check_subject(subject)
        self._require_keyring()
        needle = "[" + encode_json(subject) + ","
        unstructure = self.serializer.converter.unstructure
        found: list[JSONValue] = []
        for recorded in await self._events_holding(needle):
            event = recorded.event
            shape = layout(type(event))
            names = [
                name
                for field, group in (shape.groups if shape else ())
                if subject_of(event, field) == subject
                for name in group
            ]
            if not names:
                continue
            found.append({
                "position": recorded.position,
                "stream_id": recorded.stream_id,
                "version": event.version,
                "type": self.serializer.registry.by_class(type(event)).name,
                "timestamp": event.timestamp.isoformat(),
                "fields": {name: unstructure(getattr(event, name)) for name in names},
            })  # fmt: skip
        stored = await self._load_keys([subject])
        forgotten = subject in stored and stored[subject] is None
        return {"subject": subject, "forgotten": forgotten, "events": found}

    async def forget(self, subject: str) -> bool:
        """Forget a data subject: destroy their key, and record `SubjectForgotten`.

        From then on their personal fields read as None, in every event and
        snapshot, on every reader (each read looks the keys up afresh), and
        storing personal data of theirs raises `SubjectForgottenError`. The
        key's destruction and the event commit in one transaction.

        Returns:
            True, or False if the subject was forgotten already (nothing is
            recorded twice).

        Raises:
            PersonalDataError: `subject` is not a non-empty string.
        """
        _check_subject(subject)
        stream = FORGOTTEN_STREAM_PREFIX + subject
        forgotten = SubjectForgotten(aggregate_id=stream, subject=subject)
        (part,) = prepare_append(stream, [forgotten], ExpectedVersion.NO_STREAM, self.serializer)
        done = await self._forget_subject(subject, part)
        if self._keyring is not None:
            self._keyring.drop(subject)  # its key leaves this process's memory too
        return done


def _snapshot_binding(snapshot: Snapshot) -> bytes:
    return f"snapshot\x00{snapshot.stream_id}\x00{snapshot.version}".encode()


def _check_subject(subject: object) -> None:
    if not isinstance(subject, str) or not subject:
        msg = f"a subject is a non-empty string, not {subject!r}"
        raise PersonalDataError(msg)
