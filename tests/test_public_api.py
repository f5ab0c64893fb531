"""The public surface: ``__all__`` lists exactly what the package offers."""

from __future__ import annotations

import importlib
import inspect

import pytest

import digital_experiments

SUBMODULES = ["backends", "callbacks", "controllers", "util"]


def defined_in_package(value: object) -> bool:
    """Whether ``value`` is a class or function defined by digital_experiments."""
    if not (inspect.isclass(value) or inspect.isfunction(value)):
        return False
    return getattr(value, "__module__", "").startswith("digital_experiments")


@pytest.mark.parametrize("name", digital_experiments.__all__)
def test_every_name_in_all_exists(name: str) -> None:
    """Every name in ``digital_experiments.__all__`` is an attribute of the package."""
    assert hasattr(digital_experiments, name)


def test_all_has_no_duplicates() -> None:
    """``__all__`` names each export once."""
    assert len(digital_experiments.__all__) == len(set(digital_experiments.__all__))


def test_every_public_class_and_function_is_in_all() -> None:
    """Every public class or function of the package namespace is listed in ``__all__``."""
    missing = [
        name
        for name, value in vars(digital_experiments).items()
        if not name.startswith("_")
        and defined_in_package(value)
        and name not in digital_experiments.__all__
    ]
    assert missing == []


def test_public_names_say_where_they_come_from() -> None:
    """Exported classes and functions belong to the package, not to a dependency."""
    for name in digital_experiments.__all__:
        value = getattr(digital_experiments, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert defined_in_package(value), name


def test_exported_errors_subclass_the_base_error() -> None:
    """Every exported exception derives from DigitalExperimentsError."""
    errors = [
        getattr(digital_experiments, name)
        for name in digital_experiments.__all__
        if inspect.isclass(getattr(digital_experiments, name))
        and issubclass(getattr(digital_experiments, name), BaseException)
    ]
    assert len(errors) >= 5
    for error in errors:
        assert issubclass(error, digital_experiments.DigitalExperimentsError)


@pytest.mark.parametrize("module", SUBMODULES)
def test_submodule_all_names_exist(module: str) -> None:
    """Each submodule's ``__all__`` lists only names it has."""
    mod = importlib.import_module(f"digital_experiments.{module}")
    assert mod.__all__
    for name in mod.__all__:
        assert hasattr(mod, name), f"digital_experiments.{module}.{name}"


@pytest.mark.parametrize("module", SUBMODULES)
def test_submodule_public_definitions_are_in_all(module: str) -> None:
    """Public classes and functions a submodule defines are in its ``__all__``."""
    mod = importlib.import_module(f"digital_experiments.{module}")
    missing = [
        name
        for name, value in vars(mod).items()
        if not name.startswith("_")
        and defined_in_package(value)
        and value.__module__ == mod.__name__
        and name not in mod.__all__
    ]
    assert missing == []


def test_version() -> None:
    """The package has a 3.x version string."""
    assert digital_experiments.__version__.startswith("3.")
