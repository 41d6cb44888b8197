"""The import graph runs one way: no module imports (at the top or inside a function) one of
a higher layer. The layers are the picture in docs/architecture.md."""

import ast
from pathlib import Path

import edgecompress

ROOT = Path(edgecompress.__file__).parent
# lowest first; a module may import its own layer and those below
LAYERS = [
    ["errors", "options", "_io", "provenance", "budget", "device.metadata", "device._isolate",
     "device.cores", "device.cache", "device.child"],
    ["data", "_tf", "device.inspect", "device.decoding"],
    ["device.micro", "device.verify", "device.tflm_sources", "device.tflm_firmware",
     "device.cortex_m", "device.arm64", "device.checks",
     "device.emulated_checks", "device.arm64.install", "device.arm64.guest", "device.targets",
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
PACKAGES = {"", "device", "techniques"}  # their __init__ only re-exports, lazily


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The package's modules that `path` imports anywhere in its code."""
    name = _name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1] + \
                (node.module.split(".") if node.module else [])
            found |= {".".join(base)} | {".".join(base + [a.name]) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module.startswith("edgecompress"):
            base = node.module.split(".")[1:]
            found |= {".".join(base)} | {".".join(base + [a.name]) for a in node.names}
    return found


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
