"""The public API: what is exported, documented, and how errors relate to builtins."""

import inspect
import typing
from types import ModuleType

import attrs
import pytest

import fabula
import fabula.exceptions
import fabula.memory
import fabula.postgres
import fabula.sqlite
import fabula.storage
import fabula.testing
import fabula.testing.strategies

PUBLIC_MODULES = [
    fabula,
    fabula.exceptions,
    fabula.memory,
    fabula.postgres,
    fabula.sqlite,
    fabula.storage,
    fabula.testing,
    fabula.testing.strategies,
]


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
class TestExports:
    def test_all_is_sorted(self, module: ModuleType) -> None:
        """__all__ is sorted, so additions are easy to review."""
        assert module.__all__ == sorted(module.__all__)

    def test_every_exported_object_has_a_docstring(self, module: ModuleType) -> None:
        """Classes and functions exported are documented, and so are their public methods."""
        missing = []
        for name in module.__all__:
            value = getattr(module, name)
            if not (inspect.isclass(value) or inspect.isfunction(value)):
                continue
            if not inspect.getdoc(value):
                missing.append(name)
            if inspect.isclass(value):
                for attr, member in vars(value).items():
                    if attr.startswith("_") or not inspect.isfunction(member):
                        continue
                    if not inspect.getdoc(member) and not attr.startswith("test_"):
                        missing.append(f"{name}.{attr}")
        assert missing == []

    def test_exported_objects_show_their_public_module(self, module: ModuleType) -> None:
        """Tracebacks and reprs name the module users import from, never a private one."""
        private = [
            f"{name} ({value.__module__})"
            for name in module.__all__
            if inspect.isclass(value := getattr(module, name)) or inspect.isfunction(value)
            if any(part.startswith("_") for part in value.__module__.split("."))
        ]
        assert private == []


@pytest.mark.parametrize(
    "package",
    [fabula, fabula.postgres, fabula.sqlite, fabula.storage, fabula.testing],
    ids=lambda m: m.__name__,
)
def test_packages_export_exactly_their_public_names(package: ModuleType) -> None:
    """The re-exporting packages expose nothing public beyond __all__, and all of it."""
    public = {
        name
        for name, value in vars(package).items()
        if not name.startswith("_")
        and not (inspect.ismodule(value) and name not in package.__all__)
    }
    assert public == set(package.__all__) - {"__version__"}


def test_version_comes_from_package_metadata() -> None:
    """__version__ is the installed distribution's version."""
    from importlib.metadata import version  # noqa: PLC0415

    assert fabula.__version__ == version("fabula")


def test_every_error_descends_from_fabula_error() -> None:
    """All exception classes share the root FabulaError and are exported by fabula.exceptions."""
    errors = [
        value
        for value in vars(fabula.exceptions).values()
        if inspect.isclass(value) and issubclass(value, BaseException)
    ]
    assert len(errors) > 10
    for error in errors:
        assert issubclass(error, fabula.FabulaError)
        assert error.__name__ in fabula.exceptions.__all__


def test_the_top_level_re_exports_only_common_errors_as_they_are() -> None:
    """Errors at the top are the same objects as in fabula.exceptions, and only a few."""
    at_top = [name for name in fabula.__all__ if name in fabula.exceptions.__all__]
    for name in at_top:
        assert getattr(fabula, name) is getattr(fabula.exceptions, name)
    assert set(at_top) < set(fabula.exceptions.__all__)
    assert "FabulaError" in at_top


def test_the_top_level_holds_no_store_author_interface() -> None:
    """What only store authors need lives in fabula.storage, not beside the application API."""
    assert set(fabula.__all__) & set(fabula.storage.__all__) == set()


def test_published_classes_still_resolve_their_annotations() -> None:
    """Giving a class its public module keeps its (and its subclasses') type hints resolvable."""

    @attrs.frozen
    class Noted(fabula.DomainEvent):
        note: str

    hints = typing.get_type_hints(Noted)
    assert hints["note"] is str
    assert hints["event_id"].__name__ == "UUID"
    assert fabula.DomainEvent.__module__ == "fabula"


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (fabula.AggregateNotFoundError, LookupError),
        (fabula.exceptions.UnknownEventTypeError, LookupError),
        (fabula.exceptions.SerializationError, ValueError),
        (fabula.exceptions.InvalidAppendError, ValueError),
        (fabula.exceptions.InvalidReadError, ValueError),
        (fabula.exceptions.NotAnEventError, TypeError),
        (fabula.exceptions.EventTypeError, TypeError),
        (fabula.exceptions.StoreClosedError, RuntimeError),
    ],
)
def test_errors_subclass_their_builtin(error: type, builtin: type) -> None:
    """Each error is also the builtin it semantically is."""
    assert issubclass(error, builtin)


def test_exception_tree_in_the_docstring_names_every_error() -> None:
    """The tree drawn in fabula.exceptions' docstring lists every error class."""
    doc = fabula.exceptions.__doc__ or ""
    for name in fabula.exceptions.__all__:
        assert name in doc


def test_the_store_packages_are_reachable_from_fabula_and_imported_only_when_used() -> None:
    """`fabula.sqlite` and `fabula.postgres` work after `import fabula`; psycopg loads late."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    program = """
import sys
import fabula
assert "fabula.sqlite" not in sys.modules and "psycopg" not in sys.modules
assert {"sqlite", "postgres"} <= set(dir(fabula))
print(fabula.sqlite.SQLiteEventStore.__name__, "psycopg" in sys.modules)
print(fabula.postgres.PostgresEventStore.__name__, "psycopg" in sys.modules)
try:
    fabula.no_such_thing
except AttributeError as error:
    print(error)
"""
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", program], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "SQLiteEventStore False",
        "PostgresEventStore True",
        "module 'fabula' has no attribute 'no_such_thing'",
    ]
