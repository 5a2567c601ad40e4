"""The public API: what is exported, documented, and how errors relate to builtins."""

import inspect
from types import ModuleType

import pytest

import fabula
import fabula.exceptions
import fabula.memory
import fabula.postgres
import fabula.sqlite
import fabula.testing
import fabula.testing.strategies

PUBLIC_MODULES = [
    fabula,
    fabula.exceptions,
    fabula.memory,
    fabula.postgres,
    fabula.sqlite,
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


@pytest.mark.parametrize("package", [fabula, fabula.testing], ids=lambda m: m.__name__)
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
    """All exception classes share the root FabulaError and are re-exported at the top."""
    errors = [
        value
        for value in vars(fabula.exceptions).values()
        if inspect.isclass(value) and issubclass(value, BaseException)
    ]
    assert len(errors) > 10
    for error in errors:
        assert issubclass(error, fabula.FabulaError)
        assert getattr(fabula, error.__name__) is error


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (fabula.AggregateNotFoundError, LookupError),
        (fabula.UnknownEventTypeError, LookupError),
        (fabula.SerializationError, ValueError),
        (fabula.InvalidAppendError, ValueError),
        (fabula.InvalidReadError, ValueError),
        (fabula.NotAnEventError, TypeError),
        (fabula.EventTypeError, TypeError),
        (fabula.StoreClosedError, RuntimeError),
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
