"""Checks the distributed files that .ci/build-wheels made; exits 1 on any problem.

    python .ci/check_wheel.py dist/*.whl dist/*.tar.gz

Wheels: tagged cp3XX-cp3XX (one per CPython version, the extension module named for it) or
cp39-abi3 (.ci/build-wheels --abi3, `_core.abi3.so`), a portable platform tag
(manylinux_2_17 = manylinux2014, or musllinux_1_2) that `auditwheel show` agrees with (for
manylinux; auditwheel can audit a musllinux wheel only on a musl system), under
3 MB, and an extension module without debug info. The sdist: holds what `pip install` needs to
build it (Cargo.lock and build.rs included) and the same version as the wheels.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

MAX_WHEEL_BYTES = 3_000_000
PORTABLE_TAGS = ("manylinux_2_17_x86_64", "musllinux_1_2_x86_64")
SDIST_NEEDS = (
    "Cargo.toml",
    "Cargo.lock",
    "build.rs",
    "pyproject.toml",
    "src/lib.rs",
    "python/stogie/__init__.py",
    "PKG-INFO",
)


def elf_section_names(data: bytes) -> list[str]:
    """Section names of a 64-bit little-endian ELF file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    str_offset, str_size = headers[shstrndx][4], headers[shstrndx][5]
    table = data[str_offset : str_offset + str_size]
    return [table[h[0] : table.index(b"\0", h[0])].decode() for h in headers]


def auditwheel_tag(wheel: Path) -> str:
    """The platform tag `auditwheel show` finds the wheel consistent with."""
    out = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    print(out.strip())
    match = re.search(r'consistent with the following platform tag:\s*"([^"]+)"', out)
    if not match:
        raise ValueError("auditwheel show gave no platform tag")
    return match.group(1)


def check_wheel(wheel: Path) -> tuple[str, list[str]]:
    """(version, problems) of one wheel."""
    problems = []
    name, version, python_tag, abi_tag, platform_tag = wheel.name[:-4].split("-")
    if (python_tag, abi_tag) == ("cp39", "abi3"):
        expected_module = "stogie/_core.abi3.so"
    elif python_tag == abi_tag and re.fullmatch(r"cp3\d+", python_tag):
        libc = "musl" if "musllinux" in platform_tag else "gnu"
        expected_module = f"stogie/_core.cpython-{python_tag[2:]}-x86_64-linux-{libc}.so"
    else:
        problems.append(f"tags {python_tag}-{abi_tag}: neither cp3XX-cp3XX nor cp39-abi3")
        expected_module = ""
    platforms = platform_tag.split(".")
    portable = [tag for tag in platforms if tag in PORTABLE_TAGS]
    if not portable:
        problems.append(f"platform tag {platform_tag} has none of {PORTABLE_TAGS}")
    elif portable[0].startswith("musllinux"):
        # auditwheel reads a musllinux wheel against the host's libc: only a musl host can say.
        print(f"{wheel.name}: not audited (auditwheel checks musllinux wheels on musl only)")
    elif auditwheel_tag(wheel) != portable[0]:
        problems.append(f"auditwheel does not agree with {portable[0]}")
    size = wheel.stat().st_size
    if size >= MAX_WHEEL_BYTES:
        problems.append(f"{size} bytes, not under {MAX_WHEEL_BYTES}")
    with zipfile.ZipFile(wheel) as zf:
        modules = [n for n in zf.namelist() if n.endswith(".so")]
        if modules != [expected_module]:
            problems.append(f"extension modules {modules}, expected {expected_module}")
        for module in modules:
            debug = [s for s in elf_section_names(zf.read(module)) if s.startswith(".debug")]
            if debug:
                problems.append(f"{module} has debug sections {debug}")
        meta = zf.read(f"{name}-{version}.dist-info/METADATA").decode()
        if "Requires-Python: >=3.9" not in meta:
            problems.append("METADATA lacks Requires-Python: >=3.9")
    print(f"{wheel.name}: {size / 1e6:.2f} MB, {len(problems)} problem(s)")
    return version, problems


def check_sdist(sdist: Path) -> tuple[str, list[str]]:
    problems = []
    version = sdist.name[len("stogie-") : -len(".tar.gz")]
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    problems += [f"sdist lacks {need}" for need in SDIST_NEEDS if need not in names]
    print(
        f"{sdist.name}: {sdist.stat().st_size / 1e6:.2f} MB, {len(names)} files,"
        f" {len(problems)} problem(s)"
    )
    return version, problems


def main(paths: list[str]) -> int:
    problems: list[str] = []
    versions = set()
    wheels = [Path(p) for p in paths if p.endswith(".whl")]
    sdists = [Path(p) for p in paths if p.endswith(".tar.gz")]
    if not wheels or len(sdists) != 1:
        problems.append(f"expected wheels and one sdist, got {paths}")
    for path in wheels:
        version, found = check_wheel(path)
        versions.add(version)
        problems += [f"{path.name}: {p}" for p in found]
    for path in sdists:
        version, found = check_sdist(path)
        versions.add(version)
        problems += [f"{path.name}: {p}" for p in found]
    if len(versions) > 1:
        problems.append(f"different versions: {sorted(versions)}")
    for problem in problems:
        print(f"check_wheel: FAIL {problem}", file=sys.stderr)
    print(
        f"check_wheel: {len(wheels)} wheel(s), {len(sdists)} sdist:"
        f" {'OK' if not problems else 'FAILED'}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
