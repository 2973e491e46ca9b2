#!/usr/bin/env python3
"""libdsinfer.so exports the public C++ API and nothing else.

Every dynamic symbol it defines must be in namespace dsinfer (or be the vtable, typeinfo or thunk of a dsinfer
class), and every name on its qualified path (dsinfer::Session::generate -> Session, generate) must be declared in
the public headers, include/dsinfer/*.hpp: a core internal (lib/), a third-party template instantiation (std, fmt,
nlohmann, xgrammar) or a private Impl member fails the test. Prints the symbol count.

usage: check_exports.py LIBRARY INCLUDE_DIR
"""
import glob
import os
import re
import subprocess
import sys

PREFIXES = ("typeinfo name for ", "typeinfo for ", "vtable for ", "non-virtual thunk to ", "virtual thunk to ",
            "covariant return thunk to ", "guard variable for ")


def public_identifiers(include_dir):
    names = set()
    for path in glob.glob(os.path.join(include_dir, "dsinfer", "*.hpp")):
        with open(path, encoding="utf-8") as f:
            text = re.sub(r"//[^\n]*", "", f.read())  # comments name things that are not declared
        names.update(re.findall(r"[A-Za-z_]\w*", text))
    return names


def strip_templates(name):
    out, depth = [], 0
    for ch in name:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def qualified_path(symbol):
    """'dsinfer::Session::generate(dsinfer::GenerateParams const&) const' -> ['Session', 'generate']"""
    for p in PREFIXES:
        if symbol.startswith(p):
            symbol = symbol[len(p):]
    if not symbol.startswith("dsinfer::"):
        return None
    name = strip_templates(re.sub(r"\[abi:\w+\]", "", symbol))  # dsinfer::f[abi:cxx11](): a std::string result
    if "operator" in name:  # operator()/operator< ...: keep the word, drop the punctuation and arguments
        name = name[:name.index("operator") + len("operator")]
    else:
        name = name.split("(", 1)[0]
    return [part.lstrip("~") for part in name.split("::")[1:]]


def main():
    library, include_dir = sys.argv[1], sys.argv[2]
    out = subprocess.run(["nm", "-D", "--defined-only", "-C", library], check=True, capture_output=True,
                         text=True).stdout
    symbols = [line.split(" ", 2)[2] for line in out.splitlines() if line.count(" ") >= 2]
    public = public_identifiers(include_dir)
    bad = []
    for s in symbols:
        path = qualified_path(s)
        if path is None or any(p != "operator" and p not in public for p in path):
            bad.append(s)
    for s in bad:
        print(f"not public API: {s}")
    if not symbols:
        print("no symbols exported")
        return 1
    if bad:
        print(f"{len(bad)} of {len(symbols)} exported symbols are not public API")
        return 1
    print(f"{len(symbols)} exported symbols, all public C++ API")
    return 0


if __name__ == "__main__":
    sys.exit(main())
