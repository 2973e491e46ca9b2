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


# What a user does with the wheel: a fresh virtual environment (no pybind11, no CMake, no pytest: only pip and what
# the wheel asks for), the wheel installed, and the package used from outside the source tree. DSINFER_WHEEL is the
# wheel file `pip wheel .` wrote (scripts/test.sh sets it); DSINFER_TEST_MODEL a small checkpoint.
@pytest.mark.skipif(not os.environ.get("DSINFER_WHEEL"), reason="DSINFER_WHEEL (a built wheel file) not set")
def test_wheel_installs_into_a_fresh_venv_and_works(tmp_path):
    import sys
    wheel = os.environ["DSINFER_WHEEL"]
    model = os.path.abspath(os.environ.get("DSINFER_TEST_MODEL", "build/models/v32-tiny"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", wheel], check=True)
    installed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], check=True, capture_output=True,
                               text=True).stdout
    names = {line.split("==")[0].lower() for line in installed.split()}
    assert names - {"dsinfer", "numpy", "pip", "setuptools", "wheel"} == set(), installed
    script = (
        "import dsinfer, sys\n"
        "assert not dsinfer.__file__.startswith(sys.argv[2]), dsinfer.__file__\n"
        "m, t = dsinfer.Model.load(sys.argv[1], n_threads=1), dsinfer.Tokenizer.load(sys.argv[1])\n"
        "s = dsinfer.Session(m, t, capacity=64)\n"
        "s.set_sampler([dsinfer.Greedy()])\n"
        "s.prefill([0, 100, 200])\n"
        "list(s.generate(max_tokens=3, stop_at_eos=False))\n"
        "print(dsinfer.__version__, len(s.generated))\n")
    out = subprocess.run([python, "-c", script, model, ROOT], check=True, capture_output=True, text=True,
                         cwd=str(tmp_path)).stdout
    assert out.split() == [project_version(), "3"]
