"""The Python API's surface: the type stubs (python/dsinfer/__init__.pyi) name exactly what the package exports,
class by class, and every public member has a docstring (help(dsinfer.Session) reads like documentation)."""
import ast
import enum
import inspect
import os

import dsinfer

STUBS = os.path.join(os.path.dirname(dsinfer.__file__), "__init__.pyi")


def stub_names():
    """{top-level name: set of member names or None for a function/variable}."""
    with open(STUBS, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    members.update(t.id for t in item.targets if isinstance(t, ast.Name))
            out[node.name] = members
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = None
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = None
    return out


def public_members(cls):
    """Members a user calls or reads, defined by dsinfer (not inherited from object, Exception, int or Enum)."""
    inherited = set()
    for base in (object, Exception, int, enum.IntEnum):
        if issubclass(cls, base):
            inherited.update(dir(base))
    names = set()
    for name in dir(cls):
        if name.startswith("_") or (name in inherited and name not in vars(cls)):
            continue
        names.add(name)
    return names


def documented(obj):
    doc = inspect.getdoc(obj) or ""
    # pybind11 puts the signature on the first line; a member without a docstring has nothing after it.
    if doc.split("\n", 1)[0].split("(", 1)[0].strip() in (getattr(obj, "__name__", None), getattr(obj, "name", None)):
        doc = doc.split("\n", 1)[1] if "\n" in doc else ""
    return bool(doc.strip())


def test_stubs_name_exactly_the_exports():
    stubs = stub_names()
    exported = set(dsinfer.__all__)
    assert exported - set(stubs) == set(), "exported but missing from __init__.pyi"
    public_stubs = {n for n in stubs if not n.startswith("_")}
    assert public_stubs - exported == set(), "in __init__.pyi but not exported (dsinfer.__all__)"
    for name in exported:
        assert hasattr(dsinfer, name), name


def test_stub_classes_list_every_public_member():
    stubs = stub_names()
    for name in dsinfer.__all__:
        obj = getattr(dsinfer, name)
        if not inspect.isclass(obj) or stubs.get(name) is None:
            continue
        runtime = public_members(obj)
        assert runtime - stubs[name] == set(), f"{name}: members missing from __init__.pyi"
        # What the stub declares exists (instance attributes set in __init__ are checked on the class's
        # annotations or slots where they live).
        slots = set(getattr(obj, "__slots__", ()))
        missing = {m for m in stubs[name] - runtime - slots if not m.startswith("_")}
        instance_attrs = set()
        if inspect.isfunction(vars(obj).get("__init__")):
            src = inspect.getsource(obj.__init__)
            instance_attrs = {m for m in missing if f"self.{m}" in src}
        assert missing - instance_attrs == set(), f"{name}: declared in __init__.pyi but absent"


def test_every_public_member_has_a_docstring():
    undocumented = []
    for name in dsinfer.__all__:
        obj = getattr(dsinfer, name)
        if name == "__version__":
            continue
        if not documented(obj):
            undocumented.append(name)
        if inspect.isclass(obj) and not issubclass(obj, enum.Enum):
            for member in public_members(obj):
                attr = inspect.getattr_static(obj, member)
                target = attr.fget if isinstance(attr, property) else getattr(obj, member)
                if isinstance(attr, property) and attr.__doc__:
                    continue
                if callable(target) or isinstance(attr, property):
                    if not documented(target) and not (isinstance(attr, property) and attr.__doc__):
                        undocumented.append(f"{name}.{member}")
    assert undocumented == [], "\n".join(undocumented)


def test_help_reads_like_documentation():
    text = inspect.getdoc(dsinfer.Session)
    assert "conversation" in text
    assert "Why the last generation ended" in (dsinfer.Session.finish_reason.__doc__ or "")
