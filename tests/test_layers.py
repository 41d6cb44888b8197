"""The import graph runs one way: no module imports (at the top or inside a function) one of
a higher layer. The layers are the table in docs/architecture.md, and the graph's drawing
there is this file's output: `python tests/test_layers.py [PACKAGE_FOLDER]`."""

import ast
import sys
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


def _name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _from_imports(path: Path, root: Path = ROOT):
    """(module, names) of each `from ... import` of the package in `path`, anywhere in its
    code, the module named from the package's root."""
    name = _name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1] + \
                (node.module.split(".") if node.module else [])
            yield ".".join(base), [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module.startswith("edgecompress"):
            yield ".".join(node.module.split(".")[1:]), [a.name for a in node.names]


def imports(path: Path, root: Path = ROOT) -> set[str]:
    """The package's modules that `path` imports anywhere in its code."""
    found = set()
    for module, names in _from_imports(path, root):
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


FOUNDATION = {"errors", "options", "_io", "provenance", "budget", "data", "_tf"}
DRAWING = ("```mermaid", "```")


# the emulators' modules before they moved to device/emulation/
FORMER_EMULATION = {"arm64", "cortex_m", "tflm_sources", "tflm_firmware", "cache", "child"}


def _part(module: str) -> str:
    """The box a module is drawn in: its subpackage, else itself."""
    parts = module.split(".")
    if parts[0] == "device" and len(parts) > 1 and \
            (parts[1] == "emulation" or parts[1] in FORMER_EMULATION):
        return "device/emulation"
    if parts[0] in {"device", "techniques", "models", "cli"}:
        return parts[0]
    return parts[0] or "edgecompress"


def drawing(root: Path = ROOT) -> str:
    """The import graph of the package at `root` as a Mermaid flowchart, one box per
    subpackage (the old emulator modules of `device/` counted as `device/emulation`), the
    foundation modules every layer may use, and the package's own lazy exports, left out."""
    names = {_name(p, root): p for p in root.rglob("*.py")}
    edges = {(_part(name), _part(target)) for name, path in names.items()
             for target in imports(path, root) if target in names}
    edges = sorted((a, b) for a, b in edges if a != b and "edgecompress" not in (a, b)
                   and b not in FOUNDATION and a not in FOUNDATION)
    lines = [DRAWING[0], "flowchart BT"]
    lines += [f'    {a.replace("/", "_")}["{a}"] --> {b.replace("/", "_")}["{b}"]'
              for a, b in edges]
    return "\n".join(lines + [DRAWING[1]])


def test_the_drawing_in_the_docs_is_the_graph():
    text = (ROOT.parent / "docs" / "architecture.md").read_text()
    assert drawing() in text, "run `python tests/test_layers.py` and paste its output"


if __name__ == "__main__":
    print(drawing(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT))
