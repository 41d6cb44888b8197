"""The public surface: every module says what it exports (`__all__`), every name it
lists exists, and every name the package re-exports is one its module exports."""

import importlib
from pathlib import Path

import edgecompress

ROOT = Path(edgecompress.__file__).parent
SKIP = {"edgecompress.device.emulation.arm64.guest"}  # runs inside the emulated ARM64 system


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name not in SKIP:
            yield name


def test_every_module_declares_its_public_names_and_they_exist():
    missing, absent = [], []
    for name in _modules():
        module = importlib.import_module(name)
        if not hasattr(module, "__all__"):
            if any(not n.startswith("_") and getattr(v, "__module__", None) == name
                   for n, v in vars(module).items() if callable(v)):
                missing.append(name)
            continue
        absent += [f"{name}.{n}" for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"no __all__: {missing}"
    assert not absent, f"listed in __all__ but not defined: {absent}"


def test_the_package_reexports_only_what_its_modules_export():
    for public, where in edgecompress._EXPORTS.items():
        module, attribute = where if isinstance(where, tuple) else (where, public)
        exported = importlib.import_module(f"edgecompress.{module}").__all__
        assert attribute in exported, f"edgecompress.{public}: {module}.{attribute}"
        assert getattr(edgecompress, public) is getattr(
            importlib.import_module(f"edgecompress.{module}"), attribute)
