"""`edgecompress phone-setup`: the emulated ARM64 system, built in the cache from Debian
packages and PyPI wheels (about 250 MB).

1. `qemu-user` (7.2, a dynamic build, so plugins load) and `mmdebstrap`, from apt.
2. An arm64 Debian bookworm root filesystem with Python 3.11, unpacked without running
   ARM code (`--variant=extract`), from the mirror the machine's apt already uses.
3. The aarch64 wheels of the `ai-edge-litert` version installed here, and numpy.
4. The counting plugin, built against QEMU 7.2's plugin header. The header (GPL) is read
   at set-up time from the TFLite Micro sources' archive when present, else from Debian's
   qemu source package; it is never part of this repository.

Every step is skipped when its result is there, and each result appears only complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from . import _prefix, home, litert_version
from ..common import build_plugin, checked
from ..sources import ARCHIVES, default_sources
from ...cores import CPUS
from ....errors import EmulatorUnavailable

__all__ = ["MIRROR_ENV", "setup", "debian_mirror"]

PACKAGES = {"qemu-aarch64": "qemu-user", "mmdebstrap": "mmdebstrap", "gcc": "gcc",
            "readelf": "binutils"}
SUITE = "bookworm"  # Python 3.11, which the cp311 wheels need
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64",
                   "manylinux_2_17_aarch64", "manylinux2014_aarch64")
MIRROR_ENV = "EDGECOMPRESS_DEBIAN_MIRROR"


def setup(cache=None, progress=print) -> Path:
    """Sets up (or checks) the emulated system for this LiteRT version; returns its folder.

    Raises:
        EmulatorUnavailable: one line saying what is missing (root, apt, the network).
    """
    root = home(cache)
    _install_tools(progress)
    _root_filesystem(root / "rootfs", progress)
    _wheels(root / "rootfs" / "opt" / "py", progress)
    plugin = build_plugin(_plugin_header(root.parent, progress), cache)
    _smoke_test(root, progress)
    for cpu in CPUS.values():  # made here, so that runs by another user need not write
        _prefix(root, cpu)
    (root / "ready.json").write_text(json.dumps(
        {"litert": litert_version(), "plugin": str(plugin)}, indent=1))
    progress(f"ready: {root}")
    return root


def _install_tools(progress) -> None:
    missing = sorted({package for tool, package in PACKAGES.items()
                      if shutil.which(tool) is None})
    if not missing:
        return
    command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    if shutil.which("apt-get") is None:
        raise EmulatorUnavailable(f"phone emulation needs the packages {', '.join(missing)}, "
                                  "and this machine has no apt-get (Debian or Ubuntu).")
    if os.geteuid() != 0:
        raise EmulatorUnavailable(f"not root: run `sudo {' '.join(command[:2])} "
                                  f"{' '.join(missing)}`, then this again.")
    progress(f"installing {', '.join(missing)} (apt)")
    checked(["apt-get", "update", "-qq"], "apt-get update")
    checked(command, "apt-get install", env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def _root_filesystem(target: Path, progress) -> None:
    if (target / "usr" / "bin" / "python3.11").exists():
        return
    if os.geteuid() != 0:
        raise EmulatorUnavailable(f"not root: building the arm64 root filesystem "
                                  f"(mmdebstrap --mode=root) needs root: run `sudo env "
                                  f"EDGECOMPRESS_CACHE={target.parents[2]} edgecompress "
                                  "phone-setup`.")
    mirror = debian_mirror()
    progress(f"building the arm64 {SUITE} root filesystem from {mirror} (~76 MB)")
    partial = _fresh(target.with_name(target.name + ".partial"))
    checked(["mmdebstrap", "--mode=root", "--variant=extract", "--arch=arm64",
             "--include=python3,libstdc++6", SUITE, str(partial), f"deb {mirror} {SUITE} main"],
            "building the arm64 root filesystem (mmdebstrap)")
    partial.rename(target)


def debian_mirror() -> str:
    """$EDGECOMPRESS_DEBIAN_MIRROR, else the Debian mirror this machine's apt uses."""
    if os.environ.get(MIRROR_ENV):
        return os.environ[MIRROR_ENV].rstrip("/")
    found = []
    parts = Path("/etc/apt/sources.list.d")
    for path in [Path("/etc/apt/sources.list"), *sorted(parts.glob("*.sources")),
                 *sorted(parts.glob("*.list"))]:
        text = path.read_text() if path.is_file() else ""
        found += re.findall(r"^URIs:\s*(\S+)", text, re.M)
        found += re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M)
    for uri in found:
        if re.search(r"/debian/?$", uri):
            return uri.rstrip("/")
    raise EmulatorUnavailable(f"no Debian mirror in this machine's apt sources: set "
                              f"${MIRROR_ENV} (for example a Debian mirror's /debian URL).")


def _wheels(target: Path, progress) -> None:
    version = litert_version()
    if (target / f"ai_edge_litert-{version}.dist-info").is_dir():
        return
    progress(f"fetching the aarch64 wheels of ai-edge-litert {version} and numpy (~30 MB)")
    partial = _fresh(target.with_name(target.name + ".partial"))
    platforms = [argument for p in WHEEL_PLATFORMS for argument in ("--platform", p)]
    checked([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "--target", str(partial), "--only-binary=:all:", "--python-version", "3.11",
             "--implementation", "cp", "--abi", "cp311", *platforms,
             f"ai-edge-litert=={version}", "numpy"], "fetching the aarch64 wheels (pip)")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def _plugin_header(folder: Path, progress) -> Path:
    """The folder holding QEMU 7.2's `qemu-plugin.h`."""
    include = folder / "qemu-plugin-api"
    if (include / "qemu-plugin.h").is_file():
        return include
    sources = default_sources()
    archive = sources / f"{ARCHIVES['plugin']}.tar.xz" if sources else None
    with tempfile.TemporaryDirectory(prefix="edgecompress-qemu-source-") as work:
        work = Path(work)
        if archive is None or not archive.is_file():
            progress("fetching QEMU 7.2's plugin header from Debian's qemu source (~24 MB)")
            archive = _debian_qemu_source(work)
        header = _extract_header(archive, work)
        partial = _fresh(include.with_name(include.name + ".partial"))
        shutil.copy(header, partial / "qemu-plugin.h")
        partial.rename(include)
    return include


def _debian_qemu_source(work: Path) -> Path:
    """Downloads the qemu source package through a private apt configuration (deb-src of
    the machine's mirror), leaving the system's apt sources alone."""
    (work / "lists" / "partial").mkdir(parents=True)
    (work / "cache" / "archives" / "partial").mkdir(parents=True)
    (work / "sources.list").write_text(f"deb-src {debian_mirror()} {SUITE} main\n")
    options = [f"-oDir::Etc::SourceList={work / 'sources.list'}",
               "-oDir::Etc::SourceParts=/dev/null", f"-oDir::State::Lists={work / 'lists'}",
               f"-oDir::Cache={work / 'cache'}", "-qq"]
    checked(["apt-get", *options, "update"], "reading Debian's source index (apt-get update)")
    checked(["apt-get", *options, "source", "--download-only", "qemu"],
            "downloading Debian's qemu source (apt-get source)", cwd=work)
    found = sorted(work.glob("qemu_7.2*.orig.tar.xz"))
    if not found:
        raise EmulatorUnavailable("Debian's qemu source is not version 7.2, whose plugin "
                                  "API the counting plugin is written for.")
    return found[0]


def _extract_header(archive: Path, work: Path) -> Path:
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith("include/qemu/qemu-plugin.h"):
                tar.extract(member, work, filter="data")
                return work / member.name
    raise EmulatorUnavailable(f"`{archive}` holds no include/qemu/qemu-plugin.h.")


def _smoke_test(root: Path, progress) -> None:
    """Imports LiteRT under the emulator, so a broken system fails here, not in a verdict."""
    progress("checking that LiteRT starts under qemu-aarch64")
    rootfs = root / "rootfs"
    checked(["qemu-aarch64", "-cpu", "cortex-a53", "-L", str(rootfs),
             str(rootfs / "usr" / "bin" / "python3"), "-c",
             "import ai_edge_litert.interpreter, numpy"], "starting LiteRT under qemu-aarch64",
            timeout=300, env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8",
                              "PYTHONPATH": str(rootfs / "opt" / "py")})


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
