"""The import graph runs one way: no module imports (at the top or inside a function) one of
a higher layer. The layers are the picture in docs/architecture.md."""

import ast
from pathlib import Path

import edgecompress

ROOT = Path(edgecompress.__file__).parent
# lowest first; a module may import its own layer and those below
LAYERS = [
    ["errors", "options", "_io", "provenance", "budget", "device.metadata", "device._isolate",
     "device.cores", "device.emulation.common"],
    ["data", "_tf", "device.inspect", "device.decoding"],
    ["device.micro", "device.verify", "device.emulation.sources", "device.emulation.firmware",
     "device.emulation.cortex_m", "device.emulation.arm64", "device.checks",
     "device.emulated_checks", "device.emulation.arm64.install", "device.emulation.arm64.guest",
     "device.targets",
     "device.verdict", "device.figures", "device.phones", "device.c_array", "storage"],
    ["models", "models.bridge", "distill", "train", "techniques", "techniques._graph",
     "techniques._layers", "techniques.channels", "techniques.cluster", "techniques.lowrank",
     "techniques.prune", "techniques.quantize", "techniques.storage", "techniques.student",
     "int4", "tflite", "report"],
    ["recipe", "sensitivity", "pipeline"],
    ["search", "demo"],
    ["cli", "cli.__main__", "cli.common", "cli.recipes", "cli.commands", "cli.reference",
     "cli.device_commands", "cli.emulator_commands", "cli.model_commands"],
]
# their __init__ only re-exports, lazily
PACKAGES = {"", "device", "device.emulation", "techniques"}


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _from_imports(path: Path):
    """(module, names) of each `from ... import` of the package in `path`, anywhere in its
    code, the module named from the package's root."""
    name = _name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1] + \
                (node.module.split(".") if node.module else [])
            yield ".".join(base), [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module.startswith("edgecompress"):
            yield ".".join(node.module.split(".")[1:]), [a.name for a in node.names]


def imports(path: Path) -> set[str]:
    """The package's modules that `path` imports anywhere in its code."""
    found = set()
    for module, names in _from_imports(path):
        found |= {module} | {f"{module}.{name}".strip(".") for name in names}
    return found


def test_every_import_of_the_package_names_a_module():
    """Imports inside functions run late; one left pointing at a moved module would fail
    only when its function first runs."""
    modules = {_name(p) for p in ROOT.rglob("*.py")}
    missing = [f"{_name(path)} imports {module or 'edgecompress'}"
               for path in ROOT.rglob("*.py") for module, _ in _from_imports(path)
               if module and module not in modules]
    assert not missing, missing


def test_every_module_has_a_layer():
    placed = {m for layer in LAYERS for m in layer} | PACKAGES
    assert {_name(p) for p in ROOT.rglob("*.py")} <= placed


def test_no_import_runs_back_up():
    level = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    upward = []
    for path in ROOT.rglob("*.py"):
        name = _name(path)
        if name in PACKAGES:
            continue
        upward += [f"{name} -> {target}" for target in imports(path)
                   if level.get(target, -1) > level[name]]
    assert not upward, upward
