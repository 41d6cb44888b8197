"""The emulated Cortex-M firmware built from TFLite Micro's sources (`sources`) and our own
(`native/`), and the instruction-counting QEMU plugin built against those sources' header.

Builds are cached under `cache_dir()`: every TFLite Micro source is compiled once per
(sources, core, kernel set, build options), and a firmware once per operator set. The
tools run in child processes with time limits.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..cores import BOARDS, CORES, Board, Core
from .common import NATIVE, build_plugin, cache_dir, checked
from .sources import Operator, check_operators, ops_header, require_tools, unpack_sources
from ...errors import OptionError
from ...options import lookup

__all__ = ["KERNEL_SETS", "BuildOptions", "Firmware", "firmware", "plugin"]

KERNEL_SETS = ("cmsis-nn", "reference")
NATIVE_FILES = ("runner.cc", "runtime.cc", "startup.c", "board.ld")


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
        options: the compiler's settings (`BuildOptions`).
        sources: the folder of the TFLite Micro archives (default: `default_sources()`).
        cache: the cache folder (default: `cache_dir()`).
        progress: called with one line of text as the build goes.

    Returns:
        The `Firmware`: its ELF, core, board, kernel set, operators, section sizes and
        marks.
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
    own = "".join((NATIVE / f).read_text() for f in NATIVE_FILES)
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
            source.write_text((NATIVE / name).read_text())
            own.append(source)
        board = BOARDS[core.board]
        capacities = [f"-DMODEL_CAPACITY={board.model_capacity}",
                      f"-DARENA_CAPACITY={board.arena_capacity}",
                      f"-DRECORD_CAPACITY={board.record_capacity}", f"-I{work}"]
        own_objects = [_compile(s, work / (s.name + ".o"), flags + capacities,
                                options.other_optimisation) for s in own]
        library = work / "libtflm.a"
        checked(["arm-none-eabi-gcc-ar", "rcs", str(library)] + [str(o) for o in objects],
             "archiving TFLite Micro")
        script = work / "board.ld"
        script.write_text(_linker_script(board))
        specs = ["--specs=rdimon.specs"] + (["--specs=nano.specs"] if options.nano else [])
        checked(["arm-none-eabi-gcc", *core.flags, "-mthumb", *specs, *_lto(options),
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
    text = checked([_compiler(source), level, *flags, *_language(source), "-E", "-P",
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
    checked([_compiler(source), level, *flags, *_language(source), "-c", str(source), "-o",
          str(partial)], f"compiling {source.name}")
    partial.replace(target)
    return target


def _linker_script(board: Board) -> str:
    template = (NATIVE / "board.ld").read_text()
    return template.format(
        code_origin=hex(board.code[0]), code_length=hex(board.code[1]),
        data_origin=hex(board.data[0]), data_length=hex(board.data[1]),
        large_origin=hex(board.large[0]), large_length=hex(board.large[1]),
        heap_size=hex(32 << 10))


def _sections(elf: Path) -> dict:
    sizes = {}
    for line in checked(["arm-none-eabi-size", "-A", str(elf)], "reading sizes").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def _symbols(elf: Path) -> dict:
    symbols = {}
    for line in checked(["arm-none-eabi-nm", str(elf)], "reading symbols").splitlines():
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
