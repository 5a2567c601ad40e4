"""Personal data sealed per subject, forgotten by destroying the subject's key, on every store."""

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import fabula
import fabula.storage
from fabula import ExpectedVersion, KeyEncryptionKey, StreamAppend
from fabula.exceptions import DuplicateEventIdError, EventTypeError
from fabula.memory import InMemoryEventStore
from fabula.postgres import PostgresEventStore
from fabula.sqlite import SQLiteEventStore

from .support.postgres import new_schema, require_postgres
from .support.telemetry import named

KEK = KeyEncryptionKey(b"k" * 32)


@fabula.event("tests.personal.Registered")
@attrs.frozen(kw_only=True)
class Registered(fabula.DomainEvent[uuid.UUID]):
    """A customer's own event: the subject is the stream's aggregate."""

    name: str | None = attrs.field(metadata=fabula.personal("aggregate_id"))
    email: str | None = attrs.field(default=None, metadata=fabula.personal("aggregate_id"))
    tier: int = 1


@fabula.event("tests.personal.Shipped")
@attrs.frozen(kw_only=True)
class Shipped(fabula.DomainEvent[uuid.UUID]):
    """An order's event that carries two people's data: the buyer's and the recipient's."""

    buyer: uuid.UUID
    recipient: str
    street: str | None = attrs.field(metadata=fabula.personal("recipient"))
    buyer_name: str | None = attrs.field(metadata=fabula.personal("buyer"))
    total: str = "0"


Opened = tuple[fabula.Store, str, Path | str]


async def open_store(kind: str, place: Path | str, key: KeyEncryptionKey | None = KEK) -> Any:
    """A store of `kind` at `place` (a file, a schema), with `key` as its key-encryption key."""
    if kind == "memory":
        return InMemoryEventStore(key_encryption_key=key)
    if kind == "sqlite":
        return SQLiteEventStore(place, key_encryption_key=key)
    store = PostgresEventStore(
        require_postgres(), schema=str(place), poll_interval=0.05, key_encryption_key=key
    )
    await store.open()
    return store


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def opened(
    request: pytest.FixtureRequest, tmp_path: Path, schemas: list[str]
) -> AsyncIterator[Opened]:
    """A fresh store of each kind with a key-encryption key, its kind and its place."""
    place: Path | str = tmp_path / "e.db"
    if request.param == "postgres":
        schemas.append(new_schema())
        place = schemas[-1]
    store = await open_store(request.param, place)
    yield store, request.param, place
    await store.close()


def raw_payloads(opened: Opened) -> list[str]:
    """Every stored payload, as the database holds it."""
    store, kind, place = opened
    if kind == "memory":
        assert isinstance(store, InMemoryEventStore)
        return [row.record.data for row in store._log]
    if kind == "sqlite":
        with sqlite3.connect(place) as conn:
            return [row[0] for row in conn.execute("SELECT data FROM fabula_events")]
    with psycopg.connect(require_postgres()) as conn:
        rows = conn.execute(f'SELECT data FROM "{place}".fabula_events').fetchall()  # noqa: S608 - a test schema
        return [row[0] for row in rows]


def registered(
    customer: uuid.UUID, version: int = 1, name: str | None = "Ada Lovelace"
) -> Registered:
    return Registered(aggregate_id=customer, version=version, name=name, email="ada@example.org")


class TestSealed:
    async def test_fields_are_stored_sealed_and_read_back_plain(self, opened: Opened) -> None:
        """The payload holds no personal value; every read gives them back."""
        store = opened[0]
        customer = uuid.uuid4()
        await store.append(
            str(customer), [registered(customer)], expected_version=ExpectedVersion.NO_STREAM
        )
        (payload,) = raw_payloads(opened)
        assert "Ada" not in payload
        assert "ada@example.org" not in payload
        assert '"tier":1' in payload.replace(" ", "")
        for recorded in [
            *(await store.read_stream(str(customer))),
            *(await store.read_all()),
            *(await store.read_log()).events,
        ]:
            event = recorded.event
            assert isinstance(event, Registered)
            assert (event.name, event.email, event.tier) == ("Ada Lovelace", "ada@example.org", 1)

    async def test_forget_destroys_the_key_once_and_records_it(self, opened: Opened) -> None:
        """After forget: None in place of the values, the rest intact, one SubjectForgotten."""
        store = opened[0]
        ada, bob = uuid.uuid4(), uuid.uuid4()
        await store.append(str(ada), [registered(ada)], expected_version=ExpectedVersion.NO_STREAM)
        await store.append(
            str(bob), [registered(bob, name="Bob")], expected_version=ExpectedVersion.NO_STREAM
        )
        assert await store.forget(str(ada)) is True
        assert await store.forget(str(ada)) is False
        (forgotten,) = await store.read_stream(str(ada))
        assert isinstance(forgotten.event, Registered)
        assert (forgotten.event.name, forgotten.event.email, forgotten.event.tier) == (
            None,
            None,
            1,
        )
        (kept,) = await store.read_stream(str(bob))
        assert isinstance(kept.event, Registered)
        assert kept.event.name == "Bob"
        records = [
            r.event for r in await store.read_all() if isinstance(r.event, fabula.SubjectForgotten)
        ]
        assert [event.subject for event in records] == [str(ada)]
        with pytest.raises(fabula.SubjectForgottenError) as refused:
            await store.append(str(ada), [registered(ada, version=2)], expected_version=1)
        assert refused.value.subject == str(ada)
        assert len(await store.read_stream(str(ada))) == 1
        nothing = Registered(aggregate_id=ada, version=2, name=None, email=None, tier=3)
        await store.append(str(ada), [nothing], expected_version=1)  # None is no personal data
        assert [r.event for r in await store.read_stream(str(ada), from_version=2)] == [nothing]

    async def test_an_event_with_two_subjects_forgets_one(self, opened: Opened) -> None:
        """Each field belongs to its own subject: forgetting the recipient keeps the buyer's."""
        store = opened[0]
        order, buyer, recipient = uuid.uuid4(), uuid.uuid4(), "recipient-7"
        shipped = Shipped(
            aggregate_id=order, version=1, buyer=buyer, recipient=recipient,
            street="12 Analytical Row", buyer_name="Ada", total="9.50",
        )  # fmt: skip
        await store.append(str(order), [shipped], expected_version=ExpectedVersion.NO_STREAM)
        assert "Analytical" not in raw_payloads(opened)[0]
        await store.forget(recipient)
        (read,) = await store.read_stream(str(order))
        assert isinstance(read.event, Shipped)
        assert (read.event.street, read.event.buyer_name, read.event.total) == (None, "Ada", "9.50")

    async def test_a_retried_append_is_recognised(self, opened: Opened) -> None:
        """Sealing the same event twice gives the same bytes, so a retry is a retry."""
        store = opened[0]
        customer = uuid.uuid4()
        event = registered(customer)
        first = await store.append(str(customer), [event], expected_version=ExpectedVersion.ANY)
        again = await store.append(str(customer), [event], expected_version=ExpectedVersion.ANY)
        assert again == first
        changed = attrs.evolve(event, name="Someone Else")
        with pytest.raises(DuplicateEventIdError):
            await store.append(str(customer), [changed], expected_version=ExpectedVersion.ANY)

    async def test_append_many_and_idempotent_appends_seal_too(self, opened: Opened) -> None:
        store = opened[0]
        ada, bob = uuid.uuid4(), uuid.uuid4()
        new = ExpectedVersion.NO_STREAM
        await store.append_many([
            StreamAppend(str(ada), [registered(ada)], expected_version=new),
            StreamAppend(str(bob), [registered(bob, name="Bob")], expected_version=new),
        ])  # fmt: skip
        assert not any("Ada" in p or "Bob" in p for p in raw_payloads(opened))
        names = [r.event.name for r in await store.read_all() if isinstance(r.event, Registered)]
        assert names == ["Ada Lovelace", "Bob"]


class TestExport:
    async def test_everything_about_a_subject_in_clear_then_nothing(self, opened: Opened) -> None:
        """Their events, and another stream's event with their data; null once forgotten."""
        store = opened[0]
        ada, other, order = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await store.append(str(ada), [registered(ada)], expected_version=ExpectedVersion.NO_STREAM)
        await store.append(str(other), [registered(other, name="Bob")], expected_version=0)
        shipped = Shipped(
            aggregate_id=order, buyer=ada, recipient="someone-else", street="1 Elsewhere",
            buyer_name="Ada L.",
        )  # fmt: skip
        await store.append(str(order), [shipped], expected_version=0)
        exported = await store.export(str(ada))
        assert (exported["subject"], exported["forgotten"]) == (str(ada), False)
        events = exported["events"]
        assert isinstance(events, list)
        assert [
            (e["stream_id"], e["type"], e["fields"]) for e in events if isinstance(e, dict)
        ] == [
            (
                str(ada),
                "tests.personal.Registered",
                {"name": "Ada Lovelace", "email": "ada@example.org"},
            ),
            (str(order), "tests.personal.Shipped", {"buyer_name": "Ada L."}),
        ]
        assert "Bob" not in json.dumps(exported)
        assert "Elsewhere" not in json.dumps(exported)
        await store.forget(str(ada))
        exported = await store.export(str(ada))
        assert exported["forgotten"] is True
        assert "Ada" not in json.dumps(exported)
        assert (await store.export("nobody"))["events"] == []


class TestKeys:
    @pytest.mark.parametrize("opened", ["sqlite", "postgres"], indirect=True)
    async def test_every_reader_sees_the_forget(self, opened: Opened) -> None:
        """A second store on the same database, with the key unwrapped already, reads None after."""
        store, kind, place = opened
        customer = uuid.uuid4()
        await store.append(
            str(customer), [registered(customer)], expected_version=ExpectedVersion.NO_STREAM
        )
        other = await open_store(kind, place)
        try:
            (before,) = await other.read_stream(str(customer))
            assert before.event.name == "Ada Lovelace"
            await store.forget(str(customer))
            (after,) = await other.read_stream(str(customer))
            assert after.event.name is None
            with pytest.raises(fabula.SubjectForgottenError):
                await other.append(str(customer), [registered(customer, 2)], expected_version=1)
        finally:
            await other.close()

    async def test_without_the_key_encryption_key_nothing_personal_is_stored_or_read(
        self, opened: Opened
    ) -> None:
        store, kind, place = opened
        customer = uuid.uuid4()
        await store.append(
            str(customer), [registered(customer)], expected_version=ExpectedVersion.NO_STREAM
        )
        if kind == "memory":
            bare = InMemoryEventStore()
            with pytest.raises(fabula.PersonalDataError, match="key_encryption_key"):
                await bare.append(
                    "x", [registered(uuid.uuid4())], expected_version=ExpectedVersion.ANY
                )
            return
        for key in (None, KeyEncryptionKey(b"w" * 32)):
            other = await open_store(kind, place, key)
            try:
                with pytest.raises(fabula.PersonalDataError):
                    await other.read_stream(str(customer))
                if key is None:
                    with pytest.raises(fabula.PersonalDataError, match="key_encryption_key"):
                        await other.append(
                            str(customer), [registered(customer, 2)], expected_version=1
                        )
                else:  # nor is a new subject's key wrapped with the wrong key
                    newcomer = uuid.uuid4()
                    with pytest.raises(fabula.PersonalDataError, match="another key"):
                        await other.append(
                            str(newcomer), [registered(newcomer)], expected_version=0
                        )
                    assert await other.read_stream(str(newcomer)) == []
            finally:
                await other.close()

    async def test_a_sealed_group_moved_to_another_event_does_not_open(self) -> None:
        """The ciphertext is bound to its event: copied into another, it is refused, not misread."""
        store = InMemoryEventStore(key_encryption_key=KEK)
        ada, bob = uuid.uuid4(), uuid.uuid4()
        await store.append(str(ada), [registered(ada)], expected_version=ExpectedVersion.NO_STREAM)
        await store.append(str(bob), [registered(bob)], expected_version=ExpectedVersion.NO_STREAM)
        rows = store._log  # tampering with what it keeps
        rows[1] = attrs.evolve(rows[1], record=rows[1].record._replace(data=rows[0].record.data))
        with pytest.raises(fabula.PersonalDataError, match="damaged"):
            await store.read_all()


class TestDeclaring:
    def test_a_personal_field_must_admit_none(self) -> None:
        with pytest.raises(EventTypeError, match="must admit None"):

            @fabula.event("tests.personal.Bad", registry=fabula.EventRegistry())
            @attrs.frozen(kw_only=True)
            class Bad(fabula.DomainEvent[str]):
                name: str = attrs.field(metadata=fabula.personal("aggregate_id"))

    def test_the_subject_field_must_exist(self) -> None:
        with pytest.raises(EventTypeError, match="not a field"):

            @fabula.event("tests.personal.Lost", registry=fabula.EventRegistry())
            @attrs.frozen(kw_only=True)
            class Lost(fabula.DomainEvent[str]):
                name: str | None = attrs.field(metadata=fabula.personal("customer_id"))

    def test_personal_needs_a_field_name(self) -> None:
        with pytest.raises(EventTypeError):
            fabula.personal("not a name")

    def test_a_key_encryption_key_is_32_bytes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        with pytest.raises(fabula.PersonalDataError, match="32 bytes"):
            KeyEncryptionKey(b"short")
        monkeypatch.setenv("TEST_KEK", "not base64!")
        with pytest.raises(fabula.PersonalDataError, match="TEST_KEK"):
            KeyEncryptionKey.from_env("TEST_KEK")
        monkeypatch.setenv("TEST_KEK", KeyEncryptionKey.generate())
        key = KeyEncryptionKey.from_env("TEST_KEK")
        assert key.unwrap(key.wrap(b"x" * 32, "s"), "s") == b"x" * 32
        with pytest.raises(fabula.PersonalDataError, match="another key"):
            key.unwrap(key.wrap(b"x" * 32, "s"), "t")


@attrs.define
class Customer(fabula.Aggregate):
    """A customer whose state keeps their name and email: personal data of the customer."""

    name: str | None = attrs.field(default=None, metadata=fabula.personal("id"))
    email: str | None = attrs.field(default=None, metadata=fabula.personal("id"))
    tier: int = 0

    @fabula.apply
    def _registered(self, event: Registered) -> None:
        self.name, self.email, self.tier = event.name, event.email, event.tier


class TestSnapshots:
    async def test_a_snapshot_is_sealed_and_reads_as_none_once_forgotten(
        self, opened: Opened
    ) -> None:
        store = opened[0]
        repo = fabula.Repository(store, snapshot_every=1)
        customer = Customer(id=uuid.uuid4())
        customer.record(Registered(name="Ada Lovelace", email="ada@example.org", tier=2))
        await repo.save(customer)
        snapshot = await store.load_snapshot(str(customer.id))
        assert snapshot is not None
        assert "Ada" not in await raw_snapshot(opened, str(customer.id))
        loaded = await repo.get(Customer, customer.id)
        assert (loaded.name, loaded.email, loaded.tier) == ("Ada Lovelace", "ada@example.org", 2)
        await store.forget(str(customer.id))
        snapshot = await store.load_snapshot(str(customer.id))
        assert snapshot is not None
        decoded = fabula.storage.SnapshotCodec().decode(snapshot, Customer, customer.id)
        assert decoded is not None
        assert (decoded.name, decoded.email, decoded.tier, decoded.version) == (None, None, 2, 1)
        loaded = await repo.get(Customer, customer.id)
        assert (loaded.name, loaded.email, loaded.tier) == (None, None, 2)


async def raw_snapshot(opened: Opened, stream_id: str) -> str:
    """A snapshot's state as the database holds it."""
    store, kind, place = opened
    if kind == "memory":
        assert isinstance(store, InMemoryEventStore)
        return store._snapshots[stream_id].state
    if kind == "sqlite":
        with sqlite3.connect(place) as conn:
            (state,) = conn.execute(
                "SELECT state FROM fabula_snapshots WHERE stream_id = ?", (stream_id,)
            ).fetchone()
            return str(state)
    with psycopg.connect(require_postgres()) as conn:
        row = conn.execute(
            f'SELECT state FROM "{place}".fabula_snapshots WHERE stream_id = %s',  # noqa: S608 - a test schema
            (stream_id,),
        ).fetchone()
        assert row is not None
        return str(row[0])


class TestReviewedEdges:
    def test_a_personal_field_inside_a_nested_class_is_refused(self) -> None:
        """Sealing works on whole fields: a mark one level down would be stored in clear."""

        @attrs.frozen
        class Address:
            owner: str
            street: str | None = attrs.field(metadata=fabula.personal("owner"))

        with pytest.raises(EventTypeError, match=r"Address\.street, which is marked personal"):

            @fabula.event("tests.personal.Moved", registry=fabula.EventRegistry())
            @attrs.frozen(kw_only=True)
            class Moved(fabula.DomainEvent[str]):
                address: list[Address] | None

    async def test_a_generator_of_events_is_still_appended(
        self, opened: Opened, spans: InMemorySpanExporter
    ) -> None:
        """Also under a recording span: the traced append counts what it was given."""
        store = opened[0]
        customer = uuid.uuid4()
        one_pass: Any = (e for e in [registered(customer)])  # typed Sequence; any iterable works
        result = await store.append(str(customer), one_pass, expected_version=0)
        assert result.version == 1
        (read,) = await store.read_stream(str(customer))
        assert isinstance(read.event, Registered)
        assert read.event.name == "Ada Lovelace"
        assert named(spans, "fabula.append")

    @pytest.mark.parametrize("opened", ["sqlite", "postgres"], indirect=True)
    async def test_a_reader_with_its_own_registry_reads_the_forget(self, opened: Opened) -> None:
        """SubjectForgotten is registered in every store's registry, not only the forgetter's."""
        store, kind, place = opened
        await store.forget("someone")
        registry = fabula.EventRegistry()
        serializer = fabula.EventSerializer(registry)
        if kind == "sqlite":
            other: Any = SQLiteEventStore(place, serializer=serializer)
        else:
            other = PostgresEventStore(require_postgres(), schema=str(place), serializer=serializer)
            await other.open()
        try:
            (read,) = await other.read_all()
            assert isinstance(read.event, fabula.SubjectForgotten)
        finally:
            await other.close()

    async def test_a_sealed_group_whose_key_row_is_missing_is_not_taken_for_forgotten(
        self, tmp_path: Path
    ) -> None:
        """A partial copy (events without their keys) fails to read rather than reading None."""
        path = tmp_path / "e.db"
        customer = uuid.uuid4()
        async with SQLiteEventStore(path, key_encryption_key=KEK) as store:
            await store.append(str(customer), [registered(customer)], expected_version=0)
        with sqlite3.connect(path) as conn:
            conn.execute("DELETE FROM fabula_subject_keys")
        async with SQLiteEventStore(path, key_encryption_key=KEK) as store:
            with pytest.raises(fabula.PersonalDataError, match="has no key in the store"):
                await store.read_stream(str(customer))

    async def test_the_forgetting_process_drops_the_unwrapped_key(self) -> None:
        store = InMemoryEventStore(key_encryption_key=KEK)
        customer = uuid.uuid4()
        await store.append(str(customer), [registered(customer)], expected_version=0)
        keyring = store._keyring
        assert keyring is not None
        assert any(subject == str(customer) for subject, _ in keyring._unwrapped)
        await store.forget(str(customer))
        assert not any(subject == str(customer) for subject, _ in keyring._unwrapped)


class TestUpcasting:
    async def test_an_upcaster_sees_the_values_or_none(self, tmp_path: Path) -> None:
        """Payloads are opened before upcasting: plaintext while the key exists, None after."""
        old_registry, new_registry = fabula.EventRegistry(), fabula.EventRegistry()

        @fabula.event("tests.personal.Named", registry=old_registry)
        @attrs.frozen(kw_only=True)
        class NamedV1(fabula.DomainEvent[str]):
            name: str | None = attrs.field(metadata=fabula.personal("aggregate_id"))

        @fabula.event("tests.personal.Named", version=2, registry=new_registry)
        @attrs.frozen(kw_only=True)
        class NamedV2(fabula.DomainEvent[str]):
            full_name: str | None = attrs.field(metadata=fabula.personal("aggregate_id"))

        seen: list[object] = []

        def rename(payload: fabula.JSONObject) -> fabula.JSONObject:
            seen.append(payload["name"])
            return {"full_name": payload.pop("name")}

        new_registry.add_upcaster("tests.personal.Named", 1, rename)
        path = tmp_path / "u.db"
        old = SQLiteEventStore(
            path, serializer=fabula.EventSerializer(old_registry), key_encryption_key=KEK
        )
        await old.append(
            "c-1", [NamedV1(aggregate_id="c-1", version=1, name="Ada")], expected_version=0
        )
        await old.close()
        async with SQLiteEventStore(
            path, serializer=fabula.EventSerializer(new_registry), key_encryption_key=KEK
        ) as new:
            (read,) = await new.read_stream("c-1")
            assert isinstance(read.event, NamedV2)
            assert read.event.full_name == "Ada"
            await new.forget("c-1")
            (read,) = await new.read_stream("c-1")
            assert isinstance(read.event, NamedV2)
            assert read.event.full_name is None
        assert seen == ["Ada", None]


class TestConcurrency:
    async def test_appends_racing_a_forget_never_leave_a_readable_value(
        self, opened: Opened
    ) -> None:
        """Six writers keep shipping to a recipient while the recipient is forgotten.

        Every append either stored sealed bytes or was refused; once the
        forget has returned, no read gives any of the recipient's values
        back (an append that took the key just before may still commit
        after: its bytes are sealed with the destroyed key), and later
        appends are refused.
        """
        store = opened[0]
        recipient = f"recipient-{uuid.uuid4()}"
        buyer = uuid.uuid4()
        refused: list[int] = []
        stored: list[int] = []
        under_way = asyncio.Event()

        async def writer(n: int) -> None:
            for k in range(15):
                order = uuid.uuid4()
                shipped = Shipped(
                    aggregate_id=order, buyer=buyer, recipient=recipient,
                    street=f"secret street {n}-{k}", buyer_name="Ada",
                )  # fmt: skip
                try:
                    await store.append(str(order), [shipped], expected_version=ExpectedVersion.ANY)
                except fabula.SubjectForgottenError:
                    refused.append(n)
                    return
                stored.append(n)
                if len(stored) >= 12:
                    under_way.set()
                await asyncio.sleep(0)

        async def forget() -> None:
            await under_way.wait()
            assert await store.forget(recipient)

        await asyncio.gather(*(writer(n) for n in range(6)), forget())
        assert refused, "no writer was refused: the forget came after them all"
        assert all("secret" not in payload for payload in raw_payloads(opened))
        read = [r.event for r in await store.read_all() if isinstance(r.event, Shipped)]
        assert read
        assert {event.street for event in read} == {None}
        assert {event.buyer_name for event in read} == {"Ada"}
        late = Shipped(
            aggregate_id=uuid.uuid4(), buyer=buyer, recipient=recipient, street="x", buyer_name="A"
        )
        with pytest.raises(fabula.SubjectForgottenError):
            await store.append(str(late.aggregate_id), [late], expected_version=ExpectedVersion.ANY)


class TestProperties:
    @settings(
        max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        name=st.text(max_size=40) | st.none(),
        email=st.emails() | st.none(),
        tier=st.integers(min_value=-(2**53), max_value=2**53),
    )
    async def test_any_value_round_trips_then_reads_as_none(
        self, opened: Opened, name: str | None, email: str | None, tier: int
    ) -> None:
        store = opened[0]
        customer = uuid.uuid4()
        event = Registered(aggregate_id=customer, version=1, name=name, email=email, tier=tier)
        await store.append(str(customer), [event], expected_version=ExpectedVersion.NO_STREAM)
        (read,) = await store.read_stream(str(customer))
        assert read.event == event
        await store.forget(str(customer))
        (read,) = await store.read_stream(str(customer))
        assert read.event == attrs.evolve(event, name=None, email=None)


class TestSQLiteFiles:
    async def test_the_destroyed_key_is_in_no_file(self, tmp_path: Path) -> None:
        """secure_delete and the truncated log: the wrapped key's bytes are gone from the disk."""
        path = tmp_path / "e.db"
        async with SQLiteEventStore(path, key_encryption_key=KEK) as store:
            customer = uuid.uuid4()
            await store.append(
                str(customer), [registered(customer)], expected_version=ExpectedVersion.NO_STREAM
            )
            with sqlite3.connect(path) as conn:
                (wrapped,) = conn.execute(
                    "SELECT wrapped FROM fabula_subject_keys WHERE subject = ?", (str(customer),)
                ).fetchone()
            assert await store.scrub()  # the key is in the database file itself now
            assert wrapped in (tmp_path / "e.db").read_bytes()
            assert await store.forget(str(customer))
            contents = _contents(tmp_path)
            assert contents
            assert wrapped not in contents
            assert b"Ada" not in contents


def _contents(folder: Path) -> bytes:
    """Every byte of every file in `folder` (the database, its log, its shared memory)."""
    return b"".join(file.read_bytes() for file in sorted(folder.iterdir()))
