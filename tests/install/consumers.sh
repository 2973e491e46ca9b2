#!/bin/sh
# Installs the build into a fresh prefix and builds and runs, against that prefix only, the consumers a user writes:
# a C program with pkg-config (consumer_c/Makefile) and a C++ application with find_package (consumer_cpp/), both
# compiling the repository's examples. Also: the SONAMEs, nothing of lib/ installed or reachable, and a pre-C++20
# compile stopped by a clear #error.
# usage: consumers.sh BUILD_DIR SOURCE_DIR MODEL_DIR WORK_DIR
set -eu
build=$1 src=$2 model=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" > "$work/install.log"

libdir=$(dirname "$(find "$prefix" -name 'libdsinfer.so' | head -n 1)")
[ -f "$libdir/libdsinfer_c.so" ] || { echo "libdsinfer_c.so not installed"; exit 1; }
readelf -d "$libdir/libdsinfer.so" | grep -q 'SONAME.*\[libdsinfer\.so\.0\]' || { echo "libdsinfer SONAME is not libdsinfer.so.0"; exit 1; }
readelf -d "$libdir/libdsinfer_c.so" | grep -q 'SONAME.*\[libdsinfer_c\.so\.1\]' || { echo "libdsinfer_c SONAME is not libdsinfer_c.so.1"; exit 1; }
stray=$(cd "$prefix/include" && find . -type f ! -path './dsinfer/*' ! -name dsinfer.h)
[ -z "$stray" ] || { echo "installed headers outside the public API: $stray"; exit 1; }
[ -f "$prefix/bin/dsinfer" ] || { echo "the command line was not installed"; exit 1; }
"$prefix/bin/dsinfer" --help > /dev/null 2>&1 || true  # runs from the prefix: finds libdsinfer through its RPATH
ldd "$prefix/bin/dsinfer" | grep -q "libdsinfer.so.0 => $prefix/" || { echo "bin/dsinfer does not load the installed libdsinfer"; exit 1; }

# C, pkg-config.
export PKG_CONFIG_PATH="$libdir/pkgconfig"
cp -r "$src/tests/install/consumer_c" "$work/c"
make -s -C "$work/c" EXAMPLE="$src/examples/generate.c"
"$work/c/version"
"$work/c/generate" "$model" "Hi there" | tail -n 1

# C++, find_package (with C through dsinfer::c).
cmake -S "$src/tests/install/consumer_cpp" -B "$work/cpp" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
  -DEXAMPLE_CXX="$src/examples/generate_text.cpp" -DEXAMPLE_C="$src/examples/generate.c" > "$work/cpp-config.log"
cmake --build "$work/cpp" > "$work/cpp-build.log"
"$work/cpp/version"
"$work/cpp/generate_text" "$model" "What is DSA?" 4 | tail -n 1
"$work/cpp/generate_c" "$model" "Hi there" | tail -n 1
ldd "$work/cpp/generate_text" | grep -q "libdsinfer.so.0 => $prefix/" || { echo "the C++ consumer does not load the installed libdsinfer"; exit 1; }

# The C++ API through pkg-config as well, and what a consumer must not get.
${CXX:-c++} -std=c++20 -o "$work/version_pc" "$src/tests/install/consumer_cpp/version.cpp" \
  $(pkg-config --cflags --libs dsinfer) -Wl,-rpath,"$libdir"
"$work/version_pc" > /dev/null
if echo '#include <dsinfer/dsinfer.hpp>' | ${CXX:-c++} -std=c++17 -fsyntax-only $(pkg-config --cflags dsinfer) -x c++ - \
     2> "$work/cxx17.log"; then
  echo "a C++17 compile of <dsinfer/dsinfer.hpp> succeeded"; exit 1
fi
grep -q "needs C++20" "$work/cxx17.log" || { echo "a C++17 compile fails without saying C++20 is needed:"; cat "$work/cxx17.log"; exit 1; }
if echo '#include "util/error.hpp"' | ${CXX:-c++} -std=c++20 -fsyntax-only $(pkg-config --cflags dsinfer) -x c++ - \
     2> /dev/null; then
  echo "lib/'s private headers are on a consumer's include path"; exit 1
fi
echo "consumers built and ran against $prefix"
