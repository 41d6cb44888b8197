"""TFLite Micro's sources for the emulated Cortex-M firmware: the cross tools they need, the
pinned archives (fetched, checked and unpacked into the cache) and the operators a tree's
resolver can add."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .common import cache_dir
from ..._io import file_sha256
from ...errors import EmulatorUnavailable, UnknownOperator

__all__ = ["INSTALL", "TOOLS", "ARCHIVES", "ARCHIVE_DIGESTS", "SOURCES_ENV", "missing_tools",
           "require_tools", "default_sources", "setup_sources", "Sources", "unpack_sources",
           "Operator", "operators", "check_operators", "ops_header"]

INSTALL = ("apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
           "libstdc++-arm-none-eabi-dev qemu-system-arm")
TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-g++", "arm-none-eabi-gcc-ar", "arm-none-eabi-nm",
         "arm-none-eabi-size", "qemu-system-arm", "gcc")
# What the builds read from ../shared/tflm (its cmsis-device headers serve only TFLite
# Micro's DWT timer, which QEMU does not model and the firmware leaves out).
ARCHIVES = {"reference": "tflm-ref", "cmsis-nn": "tflm-cmsis_nn",
            "plugin": "qemu-7.2-plugin-api"}
# SHA-256 of the archives edgecompress builds from (TFLite Micro 90b983c of 2026-08-20 with
# the CMSIS-NN and CMSIS_6 commits its download scripts pin; QEMU 7.2's plugin header):
# `setup_sources` refuses anything else.
ARCHIVE_DIGESTS = {
    "tflm-ref": "8453eb45d3a0dc63b9d1a420912a9aa5d7b88c79c1e3cb3dbd59a578d9d629b0",
    "tflm-cmsis_nn": "180a0dbb20d8f726ff1efc6f0fa57abc2c22ea07239f5375fa104c8c76af8a00",
    "qemu-7.2-plugin-api": "a1465f3aec1b701af3435fdec3f3e092da5d9dd58f28d3a5ca99bbf1a50babd1",
}
SOURCES_ENV = "EDGECOMPRESS_TFLM_SOURCES"


# --- where tools, sources and the cache are ---------------------------------------------

def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise EmulatorUnavailable(f"emulating a microcontroller needs {', '.join(missing)}: "
                                  f"install them with `{INSTALL}` (Debian/Ubuntu).")


def default_sources() -> Path | None:
    """$EDGECOMPRESS_TFLM_SOURCES, else `../shared/tflm` beside this checkout or the
    working folder, else what `setup_sources` fetched into the cache, when it exists."""
    if os.environ.get(SOURCES_ENV):
        return Path(os.environ[SOURCES_ENV])
    checkout = Path(__file__).resolve().parents[3]  # above edgecompress/device/emulation/
    for candidate in (checkout.parent / "shared" / "tflm", Path.cwd().parent / "shared" / "tflm",
                      cache_dir() / "archives"):
        if candidate.is_dir():
            return candidate
    return None


def setup_sources(url: str, destination=None, progress=None) -> Path:
    """Downloads the three archives from the folder at `url` (https://, or file:// for a
    local copy), checks each against its pinned SHA-256, and keeps them in `destination`
    (default: the cache's `archives`, which `default_sources` looks in). Returns it."""
    import urllib.error
    import urllib.request

    destination = Path(destination) if destination else cache_dir() / "archives"
    destination.mkdir(parents=True, exist_ok=True)
    for name, digest in ARCHIVE_DIGESTS.items():
        target = destination / f"{name}.tar.xz"
        if target.is_file() and file_sha256(target) == digest:
            continue
        source = f"{url.rstrip('/')}/{name}.tar.xz"
        (progress or (lambda line: None))(f"fetching {source}")
        partial = target.with_name(target.name + ".partial")
        try:
            with urllib.request.urlopen(source, timeout=60) as response, \
                    open(partial, "wb") as out:
                shutil.copyfileobj(response, out)
        except (OSError, urllib.error.URLError) as e:
            partial.unlink(missing_ok=True)
            raise EmulatorUnavailable(f"cannot fetch {source}: {e}.") from None
        if file_sha256(partial) != digest:
            partial.unlink()
            raise EmulatorUnavailable(f"{source} is not the pinned archive (SHA-256 differs); "
                                      "nothing was kept.")
        partial.replace(target)
    return destination


@dataclass(frozen=True)
class Sources:
    """The unpacked source trees, keyed by what `ARCHIVES` names, and their digest."""

    trees: dict
    digest: str

    def tree(self, kernels: str) -> Path:
        return self.trees[kernels]


def unpack_sources(folder=None, cache=None) -> Sources:
    """Unpacks the three archives of `folder` (see `ARCHIVES`) into the cache, once per
    archive digest."""
    folder = Path(folder) if folder else default_sources()
    if folder is None or not folder.is_dir():
        raise EmulatorUnavailable(
            "the TFLite Micro sources are not found: give their folder with --tflm-sources "
            f"or ${SOURCES_ENV} (it holds {', '.join(a + '.tar.xz' for a in ARCHIVES.values())})"
            ", or fetch them with `edgecompress emulator-setup`.")
    trees, digests = {}, []
    for key, name in ARCHIVES.items():
        archive = folder / f"{name}.tar.xz"
        if not archive.is_file():
            raise EmulatorUnavailable(f"`{archive}` is missing from the TFLite Micro sources.")
        digest = file_sha256(archive)
        digests.append(digest)
        target = cache_dir(cache) / "sources" / f"{name}-{digest[:16]}"
        if not (target / name).is_dir():
            _unpack(archive, target)
        trees[key] = target / name
    return Sources(trees, hashlib.sha256("".join(digests).encode()).hexdigest()[:16])


def _unpack(archive: Path, target: Path) -> None:
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(partial, filter="data")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


# --- operators ---------------------------------------------------------------------------

RESOLVER_METHOD = re.compile(
    r"TfLiteStatus (Add\w+)\(\s*(const TFLMRegistration& registration\s*=\s*)?"
    r"(?:tflite::)?(Register_\w+)\(\)\s*\)\s*\{\s*return AddBuiltin\(\s*BuiltinOperator_(\w+)"
    r"|TfLiteStatus (Add\w+)\(\)\s*\{\s*return AddBuiltin\(\s*BuiltinOperator_(\w+),\s*"
    r"(Register_\w+)\(\)")


@dataclass(frozen=True)
class Operator:
    """How the firmware adds one builtin operator, and the sources that define it."""

    name: str
    method: str
    registration: str
    sources: tuple[str, ...]
    markable: bool  # its Add method takes a registration, so its invoke can be marked


# Custom operators the firmware adds by name: TFLite Micro's DECODE, which expands weights
# stored compressed (`edgecompress.storage`); its state classes are in their own sources.
CUSTOM = {"TFLM_DECODE": ("Register_DECODE", ("decode.cc", "decode_state.cc",
                                              "decode_state_lut.cc", "decode_state_prune.cc",
                                              "decode_state_huffman.cc"))}


def operators(tree: Path) -> dict[str, Operator]:
    """Every builtin operator that the tree's resolver can add and whose kernel the tree
    defines, and the custom operators of `CUSTOM` it holds, by TFLite name."""
    header = (tree / "tensorflow/lite/micro/micro_mutable_op_resolver.h").read_text()
    kernels = tree / "tensorflow/lite/micro/kernels"
    defined = {}
    for path in sorted(kernels.rglob("*.cc")):
        for name in re.findall(r"TFLMRegistration\s+(Register_\w+)\(\)\s*\{", path.read_text()):
            defined[name] = path
    found = {}
    for match in RESOLVER_METHOD.finditer(header):
        if match.group(1):
            method, markable, registration, op = match.group(1, 2, 3, 4)
        else:
            method, op, registration = match.group(5, 6, 7)
            markable = None
        if registration not in defined:
            continue
        source = defined[registration]
        common = kernels / f"{source.stem}_common.cc"
        files = [source] + ([common] if common.is_file() else [])
        found[op] = Operator(op, method, registration,
                             tuple(str(f.relative_to(tree)) for f in files), bool(markable))
    for name, (registration, files) in CUSTOM.items():
        if all((kernels / f).is_file() for f in files):
            found[name] = Operator(name, "AddCustom", registration,
                                   tuple(f"tensorflow/lite/micro/kernels/{f}" for f in files),
                                   True)
    return found


def check_operators(used, tree: Path, kernels: str, core: str) -> list[Operator]:
    """The `Operator`s for the model's operator names, or an error naming the first the
    firmware cannot run."""
    available = operators(tree)
    for name in sorted(used):
        if name not in available:
            raise UnknownOperator(f"operator {name} is not in TFLite Micro's {kernels} kernel "
                                 f"set for {core}.")
    return [available[name] for name in sorted(used)]


def ops_header(ops: list[Operator]) -> str:
    """The generated `ops.h`: how many operators and how the resolver adds them."""
    lines = [f"#define EDGECOMPRESS_OP_COUNT {len(ops)}",
             "#define EDGECOMPRESS_ADD_OPS(resolver) \\"]
    for k, op in enumerate(ops):
        if op.method == "AddCustom":  # takes a pointer: the wrapped copy must outlive main
            lines.append(f"  static TFLMRegistration custom_{k} = "
                         f"Marked<{k}>::Wrap(tflite::{op.registration}()); \\")
            call = f'resolver.AddCustom("{op.name}", &custom_{k})'
        else:
            call = (f"resolver.{op.method}(Marked<{k}>::Wrap(tflite::{op.registration}()))"
                    if op.markable else f"resolver.{op.method}()")
        lines.append(f"  {call}; \\")
    return "\n".join(lines) + "\n  do {} while (0)\n"
