"""The public surface: every module says what it exports (`__all__`), every name it
lists exists, and every name the package re-exports is one its module exports."""

import ast
import importlib
import inspect
import textwrap
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


# the Python API users are shown (docs/python-api.md) beyond the package's own exports
DOCUMENTED = ["data.load", "data.Dataset.with_preprocess", "data.Dataset.split", "models.load",
              "models.bridge.register", "models.bridge.save_keras3", "recipe.run",
              "pipeline.compress", "pipeline.prepare_output", "pipeline.export_result",
              "pipeline.judge", "tflite.export", "device.verify.evaluate", "search.run",
              "budget.paired_drop", "device.figures.measure"] + \
             [f"techniques.{t}.apply" for t in ("prune", "channels", "quantize", "cluster",
                                                 "lowrank", "storage", "student")]


def _function(dotted: str):
    module, _, attribute = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(f"edgecompress.{module}"), attribute)
    except ModuleNotFoundError:  # a method: module.Class.method
        module, _, owner = module.rpartition(".")
        return getattr(getattr(importlib.import_module(f"edgecompress.{module}"), owner),
                       attribute)


def _returns_a_value(function) -> bool:
    source = textwrap.dedent(inspect.getsource(function))
    top = ast.parse(source).body[0]
    nested = {id(n) for f in ast.walk(top) if f is not top and isinstance(
        f, (ast.FunctionDef, ast.Lambda)) for n in ast.walk(f)}
    return any(isinstance(n, ast.Return) and n.value is not None and id(n) not in nested
               for n in ast.walk(top))


MANY = 5  # a public function of this many parameters says what each is, wherever it is


def _many_parameters() -> list[str]:
    """The library's public functions (the command line's take `args`) of `MANY`
    parameters or more."""
    found = []
    for name in _modules():
        if name.startswith("edgecompress.cli"):
            continue
        module = importlib.import_module(name)
        for public in getattr(module, "__all__", ()):
            function = getattr(module, public)
            if inspect.isfunction(function) and function.__module__ == name and \
                    len(inspect.signature(function).parameters) >= MANY:
                found.append(f"{name.removeprefix('edgecompress.')}.{public}")
    return found


def test_the_documented_functions_say_args_and_returns():
    exported = [f"{w[0]}.{w[1]}" if isinstance(w, tuple) else f"{w}.{name}"
                for name, w in edgecompress._EXPORTS.items()]
    lacking = []
    for dotted in sorted(set(exported + DOCUMENTED + _many_parameters())):
        function = _function(dotted)
        if not inspect.isfunction(function):
            continue  # classes document their fields
        doc = inspect.getdoc(function) or ""
        takes = [p for p in inspect.signature(function).parameters if p != "self"]
        if takes and "Args:" not in doc:
            lacking.append(f"{dotted}: Args")
        if _returns_a_value(function) and "Returns:" not in doc:
            lacking.append(f"{dotted}: Returns")
    assert not lacking, lacking
