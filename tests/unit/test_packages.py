"""The four workspace packages import and expose their versions."""

import importlib

import pytest


@pytest.mark.parametrize(
    "module", ["netsody_common", "netsody_controller", "netsody_superpeer", "netsody_agent"]
)
def test_package_imports(module: str) -> None:
    assert importlib.import_module(module).__version__ == "0.1.0"
