"""TFLite Micro built for a Cortex-M core and run under `qemu-system-arm`.

The firmware (sources in `firmware/`) reads the `.tflite` and the input tensors through
semihosting at run time and writes every output tensor back, so one firmware serves every
model with the same operators. A QEMU plugin (`firmware/count.c`) counts the instructions
executed between marks around each `Invoke()` and each operator. QEMU models no pipeline,
caches or wait states: the counts are exact and deterministic, cycles are not.

Builds are cached under `cache_dir()`: every TFLite Micro source is compiled once per
(sources, core, kernel set, build options), and a firmware once per operator set.
Everything here runs native tools in child processes with time limits.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from . import child
from .cache import cache_dir
from .cores import BOARDS, CORES, Board, Core
from .._io import file_sha256
from ..errors import (DoesNotFit, EmulationError, EmulatorUnavailable, OptionError,
                      UnknownOperator)
from ..options import lookup

__all__ = ["INSTALL", "ARCHIVES", "ARCHIVE_DIGESTS", "SOURCES_ENV", "BuildOptions",
           "missing_tools", "require_tools", "default_sources", "setup_sources", "Sources",
           "unpack_sources", "Operator", "operators", "check_operators", "ops_header",
           "Firmware", "firmware", "plugin", "build_plugin", "EmulatedRun", "run"]

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
KERNEL_SETS = ("cmsis-nn", "reference")
SOURCES_ENV = "EDGECOMPRESS_TFLM_SOURCES"
FIRMWARE = resources.files("edgecompress.device") / "firmware"  # our own sources
FIRMWARE_FILES = ("runner.cc", "runtime.cc", "startup.c", "board.ld")


@dataclass(frozen=True)
class BuildOptions:
    """How TFLite Micro is compiled: TFLite Micro's own optimisation levels (-O2 for kernels
    and third-party code, -Os for the rest) with link-time optimisation and newlib-nano.
    On the ResNet-8 and the Cortex-M4 (`benchmarks/mcu_emulation_resnet8.py --options`),
    LTO runs CMSIS-NN in 3.1 % fewer instructions and newlib-nano saves 28 KB of flash,
    with the same output bytes; -O3 or -Os kernels cost 23 % to 5x more instructions."""

    kernel_optimisation: str = "-O2"
    other_optimisation: str = "-Os"
    lto: bool = True
    nano: bool = True  # newlib-nano: smaller C library, only the file I/O uses it
    strip_error_strings: bool = False

    def __post_init__(self):
        for name in ("kernel_optimisation", "other_optimisation"):
            if getattr(self, name) not in ("-O1", "-O2", "-O3", "-Os"):
                raise OptionError(f"`{name}` must be one of -O1, -O2, -O3, -Os. "
                                  f"Received: {name}={getattr(self, name)!r}.")

    def key(self) -> str:
        return (f"{self.kernel_optimisation}{self.other_optimisation}"
                f"{'-lto' if self.lto else ''}{'-nano' if self.nano else ''}"
                f"{'-strip' if self.strip_error_strings else ''}").replace("-O", "O")


COMMON_FLAGS = (
    "-mthumb", "-mlittle-endian", "-funsigned-char", "-fomit-frame-pointer",
    "-ffunction-sections", "-fdata-sections", "-fno-unwind-tables",
    "-fno-asynchronous-unwind-tables", "-fmessage-length=0", "-DTF_LITE_STATIC_MEMORY",
    "-DTF_LITE_MCU_DEBUG_LOG", "-DTF_LITE_DISABLE_X86_NEON", "-DNDEBUG")
CXX_FLAGS = ("-std=c++17", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics")
# Test and tooling files of the tree, TFLite Micro's own profiler and board set-up (the
# runner has its own), and the DWT timer that QEMU does not model.
EXCLUDED = re.compile(r"^(fake_micro_context|mock_micro_graph|test_helper|recording_|"
                      r"micro_time|kernel_runner|hexdump|micro_profiler|system_setup)|"
                      r"_test\.cc$")
SUPPORT_KERNELS = ("kernel_util.cc", "micro_tensor_utils.cc")


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
    checkout = Path(__file__).resolve().parents[2]
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


# --- building ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Firmware:
    """A linked firmware image and what it takes."""

    elf: Path
    core: Core
    board: Board
    kernels: str
    ops: tuple[Operator, ...]
    sections: dict  # section name -> bytes
    invoke_mark: int
    op_mark: int
    cached: bool = False  # taken from the cache, not built by this call

    @property
    def flash_bytes(self) -> int:
        """Code, read-only and initialised data (the model's bytes come on top)."""
        return sum(self.sections.get(s, 0) for s in
                   (".text", ".ARM.extab", ".ARM.exidx", ".init_array", ".data"))

    @property
    def static_ram_bytes(self) -> int:
        """Initialised and zeroed data (the arena comes on top); the heap and buffers that
        only the emulator's file loading uses are left out."""
        return self.sections.get(".data", 0) + self.sections.get(".bss", 0)


def firmware(used_ops, *, core: str = "cortex-m4", kernels: str = "cmsis-nn",
             options: BuildOptions = BuildOptions(), sources=None, cache=None,
             progress=None) -> Firmware:
    """The firmware for a core, a kernel set and the operators a model uses, built or
    taken from the cache.

    Args:
        used_ops: TFLite operator names, e.g. {"CONV_2D", "SOFTMAX"}.
        core: a key of `CORES`.
        kernels: "cmsis-nn" (what products ship) or "reference".
        sources: the folder of the TFLite Micro archives (default: `default_sources()`).
        cache: the cache folder (default: `cache_dir()`).
        progress: called with one line of text as the build goes.
    """
    require_tools()
    core_profile = lookup(CORES, core, "core")
    if kernels not in KERNEL_SETS:
        raise OptionError(f"`kernels` must be one of {', '.join(KERNEL_SETS)}. "
                          f"Received: kernels={kernels!r}.")
    trees = unpack_sources(sources, cache)
    tree = trees.tree(kernels)
    ops = check_operators(used_ops, tree, kernels, core)
    build = cache_dir(cache) / "tflm" / f"{trees.digest}-{core}-{kernels}-{options.key()}"
    board = BOARDS[core_profile.board]
    own = "".join((FIRMWARE / f).read_text() for f in FIRMWARE_FILES)
    name = hashlib.sha256((own + ops_header(ops) + repr(board)).encode()).hexdigest()[:12]
    elf = build / "firmware" / name / "runner.elf"
    cached = elf.is_file()
    if not cached:
        _build(elf, tree, core_profile, kernels, ops, options, build, progress)
    sections = _sections(elf)
    symbols = _symbols(elf)
    return Firmware(elf, core_profile, board, kernels, tuple(ops), sections,
                    symbols["edgecompress_mark_invoke"], symbols["edgecompress_mark"], cached)


def _build(elf, tree, core, kernels, ops, options, build, progress) -> None:
    flags = _flags(tree, core, kernels, options)
    library_sources = _library_sources(tree, kernels, ops)
    objects = _compile_all(library_sources, tree, build.parent / "objects", flags, options,
                           progress,
                           f"TFLite Micro ({kernels}, {core.name})")
    folder = elf.parent
    build.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=build))
    try:
        (work / "ops.h").write_text(ops_header(ops))
        own = []
        for name in ("runner.cc", "runtime.cc", "startup.c"):
            source = work / name
            source.write_text((FIRMWARE / name).read_text())
            own.append(source)
        board = BOARDS[core.board]
        capacities = [f"-DMODEL_CAPACITY={board.model_capacity}",
                      f"-DARENA_CAPACITY={board.arena_capacity}",
                      f"-DRECORD_CAPACITY={board.record_capacity}", f"-I{work}"]
        own_objects = [_compile(s, work / (s.name + ".o"), flags + capacities,
                                options.other_optimisation) for s in own]
        library = work / "libtflm.a"
        _run(["arm-none-eabi-gcc-ar", "rcs", str(library)] + [str(o) for o in objects],
             "archiving TFLite Micro")
        script = work / "board.ld"
        script.write_text(_linker_script(board))
        specs = ["--specs=rdimon.specs"] + (["--specs=nano.specs"] if options.nano else [])
        _run(["arm-none-eabi-gcc", *core.flags, "-mthumb", *specs, *_lto(options),
              "-T", str(script), "-Wl,--gc-sections", "-o", str(work / "runner.elf"),
              *map(str, own_objects), str(library), "-lm"], "linking the firmware")
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        work.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _flags(tree, core, kernels, options) -> list[str]:
    includes = [tree, tree / "third_party/gemmlowp", tree / "third_party/flatbuffers/include",
                tree / "third_party/ruy", tree / "third_party/kissfft"]
    defines = []
    if kernels == "cmsis-nn":
        includes += [tree / "third_party/cmsis", tree / "third_party/cmsis_nn",
                     tree / "third_party/cmsis_nn/Include"]
        defines += ["-DCMSIS_NN", "-DARM_NN_ENABLE_F16=0", "-DARM_NN_ENABLE_F32=0"]
    if options.strip_error_strings:
        defines.append("-DTF_LITE_STRIP_ERROR_STRINGS")
    # __FILE__ (in TFLite Micro's error messages) must not name the tree's folder, or the
    # objects of the two trees could never be shared.
    return [*core.flags, *COMMON_FLAGS, *defines, *_lto(options),
            *(f"-I{path}" for path in includes), f"-ffile-prefix-map={tree}=."]


def _lto(options) -> list[str]:
    return ["-flto"] if options.lto else []


def _library_sources(tree: Path, kernels: str, ops) -> list[str]:
    """The framework, the support kernels, the model's kernels and (CMSIS-NN) every
    integer CMSIS-NN source: what the runner can link, and no more."""
    files = []
    for path in sorted((tree / "tensorflow").rglob("*.cc")):
        relative = str(path.relative_to(tree))
        if "/micro/kernels/" in relative or EXCLUDED.search(path.name):
            continue
        files.append(relative)
    files += [f"tensorflow/lite/micro/kernels/{name}" for name in SUPPORT_KERNELS]
    files += sorted({source for op in ops for source in op.sources})
    if kernels == "cmsis-nn":
        files += [str(p.relative_to(tree))
                  for p in sorted((tree / "third_party/cmsis_nn/Source").rglob("*.c"))
                  if not re.search(r"_f16\.c$|_f32\.c$|nntables_flt\.c$", p.name)]
    return files


def _compile_all(files, tree, objects, flags, options, progress, what) -> list[Path]:
    """Objects for `files`, each compiled once per preprocessed text and flags: the
    framework files, identical in both kernel sets' trees, are shared between them."""
    jobs = [(tree / relative, _optimisation(relative, options)) for relative in files]
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        keys = list(pool.map(lambda job: _remembered_key(*job, flags, objects), jobs))
        targets = [objects / key[:2] / f"{key}.o" for key in keys]
        todo = [(source, target, level) for (source, level), target in zip(jobs, targets)
                if not target.is_file()]
        if not todo:
            return targets
        report = progress or (lambda line: None)
        report(f"compiling {what}: {len(todo)} files on {os.cpu_count()} cores, once")
        started = time.monotonic()
        running = [pool.submit(_compile, source, target, flags, level)
                   for source, target, level in todo]
        for count, job in enumerate(concurrent.futures.as_completed(running), 1):
            job.result()
            if count % 25 == 0 or count == len(running):
                report(f"  {count}/{len(running)} files, {time.monotonic() - started:.0f} s")
    return targets


def _remembered_key(source: Path, level: str, flags, objects: Path) -> str:
    """`_object_key`, remembered per source path and flags: the unpacked trees never
    change (their folders are named by the archives' digests)."""
    memo = objects / "keys" / hashlib.sha256(
        "\0".join([str(source), level, *flags]).encode()).hexdigest()
    if memo.is_file():
        return memo.read_text()
    key = _object_key(source, level, flags)
    memo.parent.mkdir(parents=True, exist_ok=True)
    partial = memo.with_name(memo.name + f".{os.getpid()}.{threading.get_ident()}")
    partial.write_text(key)
    partial.replace(memo)
    return key


def _object_key(source: Path, level: str, flags) -> str:
    """A digest of what the compiler sees: the preprocessed text (without line markers)
    and every flag that is not for the preprocessor (includes, defines, path maps)."""
    cxx = source.suffix == ".cc"
    text = _run([_compiler(source), level, *flags, *_language(source), "-E", "-P",
                 str(source)], f"preprocessing {source.name}")
    settings = [level, *_language(source),
                *(f for f in flags if not f.startswith(("-I", "-D", "-ffile-prefix-map")))]
    return hashlib.sha256(("\0".join(settings) + "\0" + str(cxx) + text).encode()).hexdigest()


def _compiler(source: Path) -> str:
    return "arm-none-eabi-g++" if source.suffix == ".cc" else "arm-none-eabi-gcc"


def _language(source: Path) -> tuple[str, ...]:
    return CXX_FLAGS if source.suffix == ".cc" else ("-std=c17",)


def _optimisation(relative: str, options: BuildOptions) -> str:
    """TFLite Micro's split: kernels and third-party code one level, the rest another."""
    if "/kernels/" in relative or relative.startswith("third_party/"):
        return options.kernel_optimisation
    return options.other_optimisation


def _compile(source: Path, target: Path, flags, level: str) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".{os.getpid()}.partial")
    _run([_compiler(source), level, *flags, *_language(source), "-c", str(source), "-o",
          str(partial)], f"compiling {source.name}")
    partial.replace(target)
    return target


def _linker_script(board: Board) -> str:
    template = (FIRMWARE / "board.ld").read_text()
    return template.format(
        code_origin=hex(board.code[0]), code_length=hex(board.code[1]),
        data_origin=hex(board.data[0]), data_length=hex(board.data[1]),
        large_origin=hex(board.large[0]), large_length=hex(board.large[1]),
        heap_size=hex(32 << 10))


def _run(command, what: str, timeout: float = 600) -> str:
    done = child.run(command, timeout=timeout)
    if done is None:
        raise EmulatorUnavailable(f"{what} ran past its {timeout:.0f} s limit and was ended.")
    if done.returncode != 0:
        raise EmulatorUnavailable(f"{what} failed ({child.ending(done.returncode)}): "
                                  f"{child.last_lines(done.stderr)}")
    return done.stdout


def _sections(elf: Path) -> dict:
    sizes = {}
    for line in _run(["arm-none-eabi-size", "-A", str(elf)], "reading sizes").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def _symbols(elf: Path) -> dict:
    symbols = {}
    for line in _run(["arm-none-eabi-nm", str(elf)], "reading symbols").splitlines():
        parts = line.split()
        if len(parts) == 3:
            symbols[parts[2]] = int(parts[0], 16) & ~1
    return symbols


def plugin(sources=None, cache=None) -> Path:
    """The instruction-counting QEMU plugin, built against QEMU 7.2's plugin header from
    the sources."""
    require_tools()
    return build_plugin(unpack_sources(sources, cache).trees["plugin"] / "include" / "qemu",
                        cache)


def build_plugin(header: Path, cache=None) -> Path:
    """`firmware/count.c` built once with the host's C compiler against the QEMU plugin
    header in the folder `header`; shared by every emulator that counts instructions."""
    code = (FIRMWARE / "count.c").read_text()
    digest = hashlib.sha256((code + (header / "qemu-plugin.h").read_text()).encode())
    library = cache_dir(cache) / "plugin" / f"libcount-{digest.hexdigest()[:12]}.so"
    if not library.is_file():
        library.parent.mkdir(parents=True, exist_ok=True)
        source = library.with_suffix(".c")
        source.write_text(code)
        partial = library.with_name(library.name + f".{os.getpid()}.partial")
        _run(["gcc", "-shared", "-fPIC", "-O2", f"-I{header}", "-o", str(partial),
              str(source)], "building the QEMU plugin")
        partial.replace(library)
    return library


# --- running -----------------------------------------------------------------------------

@dataclass
class EmulatedRun:
    """What the firmware did with a model under QEMU."""

    outputs: list  # one array per output tensor, (images, *shape), in the tensor's type
    instructions: np.ndarray  # per image, between the marks around Invoke()
    operators: list  # (node index, operator name, instructions per image (median))
    arena_bytes: int
    firmware: Firmware
    seconds: float = 0.0

    @property
    def ram_bytes(self) -> int:
        return self.firmware.static_ram_bytes + self.arena_bytes

    def flash_bytes(self, model_bytes: int) -> int:
        return self.firmware.flash_bytes + model_bytes


FAULTS = {2: "NMI", 3: "HardFault", 4: "MemManage", 5: "BusFault", 6: "UsageFault"}
SECONDS_PER_INSTRUCTION = 1e-8  # QEMU ran ~1e9 guest instructions/s here; 10x margin
INSTRUCTIONS_PER_MAC = 20  # more than any kernel set counted (M0+ reference: 13.4)


def run(model, inputs, *, core: str = "cortex-m4", kernels: str = "cmsis-nn",
        options: BuildOptions = BuildOptions(), sources=None, cache=None, timeout=None,
        progress=None) -> EmulatedRun:
    """Runs `inputs` through the model on the emulated core.

    Args:
        model: an `inspect.Model` (from `inspect.open`).
        inputs: images already in the input tensor's type, (N, *input shape[1:]); a list
            with one such array per input tensor for models with several inputs.
        timeout: seconds before QEMU is ended (default: from the model's MACs).

    Raises:
        EmulatorUnavailable: tools or sources missing.
        EmulationError: an operator the firmware lacks, a fault, or a time-out.
        DoesNotFit: the model or its arena is larger than the board's buffers.
    """
    board = BOARDS[lookup(CORES, core, "core").board]
    if model.size > board.model_capacity:  # before any build
        raise DoesNotFit(f"the model ({model.size:,} bytes) is larger than the "
                         f"{board.model_capacity:,} bytes the {board.machine} firmware can "
                         "load.")
    arrays = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    records = _records(model, arrays)
    built = firmware({op.name for op in model.operators}, core=core, kernels=kernels,
                     options=options, sources=sources, cache=cache, progress=progress)
    count = len(arrays[0])
    if timeout is None:
        macs = model.summary()["macs"]
        timeout = 30 + count * max(macs, 1e6) * INSTRUCTIONS_PER_MAC * SECONDS_PER_INSTRUCTION
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgecompress-qemu-") as work:
        work = Path(work)
        (work / "model.tflite").write_bytes(model.content)
        (work / "inputs.bin").write_bytes(records)
        log, stdout = _boot(built, work, timeout, model, plugin(sources, cache))
        raw = (work / "outputs.bin").read_bytes() if (work / "outputs.bin").exists() else b""
    arena = re.search(r"arena (\d+)", stdout)
    invokes, op_counts = _marks(log)
    outputs = _outputs(model, raw, count)
    if arena is None or len(outputs[0]) != count or len(invokes) != count:
        raise EmulationError(f"the firmware stopped early on `{model.path or 'the model'}`: "
                             f"{len(invokes)} of {count} images run.")
    return EmulatedRun(outputs, np.array(invokes, np.int64),
                       _per_operator(model, built.ops, op_counts),
                       int(arena.group(1)), built, time.monotonic() - started)


def _records(model, arrays) -> bytes:
    tensors = [model.tensors[i] for i in model.inputs]
    if len(arrays) != len(tensors):
        raise OptionError(f"the model has {len(tensors)} inputs; {len(arrays)} given.")
    parts = []
    for array, tensor in zip(arrays, tensors):
        array = np.ascontiguousarray(array)
        if array.shape[1:] != tuple(tensor.shape[1:]) or array.dtype.itemsize * \
                int(np.prod(array.shape[1:])) != tensor.bytes:
            raise OptionError(f"inputs of shape {array.shape} and type {array.dtype} do not "
                              f"fit the input tensor {tensor.shape} {tensor.dtype}.")
        parts.append(array.reshape(len(array), -1).view(np.uint8))
    return np.concatenate(parts, axis=1).tobytes()


def _boot(built: Firmware, work: Path, timeout: float, model, counter: Path):
    command = [
        "qemu-system-arm", "-M", built.board.machine, "-nographic", "-monitor", "none",
        "-serial", "none", "-semihosting-config",
        "enable=on,target=native,arg=runner,arg=model.tflite,arg=inputs.bin,arg=outputs.bin",
        "-kernel", str(built.elf), "-plugin",
        f"{counter},invoke={built.invoke_mark:#x},op={built.op_mark:#x}",
        "-d", "plugin", "-D", "marks.log"]
    name = f"`{model.path}`" if model.path else "the model"
    done = child.run(command, timeout=timeout, cwd=work)
    if done is None:
        raise EmulationError(f"the {built.core.name} firmware ran past its {timeout:.0f} s "
                             f"limit on {name}, at image {_images_done(work, model)}; QEMU "
                             "was ended.")
    log = (work / "marks.log").read_text() if (work / "marks.log").exists() else ""
    fault = re.search(r"fault: exception (\d+)", done.stderr)
    if fault:
        number = int(fault.group(1))
        raise EmulationError(f"the {built.core.name} firmware faulted ({FAULTS.get(number, '')}"
                             f" exception {number}) on {name}, at image "
                             f"{_images_done(work, model)}.")
    if done.returncode == 3:
        raise DoesNotFit(f"{name} does not allocate in the {built.board.arena_capacity:,}-"
                         f"byte arena of the {built.board.machine} firmware: "
                         f"{child.last_lines(done.stderr)}")
    if done.returncode != 0:
        raise EmulationError(f"the {built.core.name} firmware failed on {name} "
                             f"({child.ending(done.returncode)}): "
                             f"{child.last_lines(done.stderr)}")
    return log, done.stdout


def _images_done(work: Path, model) -> int:
    path = work / "outputs.bin"
    per_image = sum(model.tensors[i].bytes for i in model.outputs)
    return (path.stat().st_size // per_image) if path.exists() and per_image else 0


def _marks(log: str) -> tuple[list[int], list[list[int]]]:
    """Instructions per Invoke() and, per Invoke(), per marked operator."""
    invokes, operators, begin, opened, current = [], [], None, None, []
    for kind, value in re.findall(r"^(invoke|op) (\d+)$", log, re.M):
        value = int(value)
        if kind == "invoke":
            if begin is None:
                begin, current = value, []
            else:
                invokes.append(value - begin)
                operators.append(current)
                begin = None
        elif opened is None:
            opened = value
        else:
            current.append(value - opened)
            opened = None
    return invokes, operators


def _per_operator(model, ops, counts) -> list:
    """(node, operator, median instructions) for the nodes whose kernel was marked."""
    markable = {op.name for op in ops if op.markable}
    nodes = [op for op in model.operators if op.name in markable]
    if not counts or any(len(c) != len(nodes) for c in counts):
        return []
    per_node = np.median(np.array(counts, np.int64), axis=0)
    return [(node.index, node.name, int(n)) for node, n in zip(nodes, per_node)]


def _outputs(model, raw: bytes, count: int) -> list:
    from .inspect import _NUMPY

    arrays, offset = [], 0
    tensors = [model.tensors[i] for i in model.outputs]
    per_image = sum(t.bytes for t in tensors)
    if count == 0 or per_image == 0 or len(raw) < per_image * count:
        images = len(raw) // per_image if per_image else 0
        return [np.zeros((images, 0))]
    table = np.frombuffer(raw[:per_image * count], np.uint8).reshape(count, per_image)
    for tensor in tensors:
        part = table[:, offset:offset + tensor.bytes].copy()
        arrays.append(part.view(_NUMPY[tensor.dtype]).reshape(count, *tensor.shape[1:]))
        offset += tensor.bytes
    return arrays
