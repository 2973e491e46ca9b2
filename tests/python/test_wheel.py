"""The installed package as a wheel user gets it: one version everywhere, and an extension that needs nothing but
the C/C++ runtime (fmt and PCRE2 compiled in), so the wheel works on a machine without the dev packages."""
import importlib.metadata
import os
import re
import shutil
import subprocess

import pytest

import dsinfer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What a manylinux-style wheel may rely on: the C library, the dynamic loader, libm, libstdc++ and libgcc_s.
RUNTIME = re.compile(r"^(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|ld-linux-x86-64|ld-linux-aarch64)"
                     r"\.so(\.\d+)*$")


def project_version():
    with open(os.path.join(ROOT, "CMakeLists.txt"), encoding="utf-8") as f:
        return re.search(r"project\(dsinfer VERSION ([0-9.]+)", f.read()).group(1)


def test_version_comes_from_cmake_project():
    assert dsinfer.__version__ == project_version()
    assert importlib.metadata.version("dsinfer") == project_version()


@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf (binutils) not installed")
def test_extension_needs_only_the_c_and_cxx_runtime():
    extension = dsinfer._dsinfer.__file__
    dynamic = subprocess.run(["readelf", "-d", extension], check=True, capture_output=True, text=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)
    assert needed, dynamic
    foreign = [lib for lib in needed if not RUNTIME.match(lib)]
    assert not foreign, f"{extension} needs {foreign} (all: {needed})"
