"""Static scan (docs/RELIABILITY.md §5.1): no unpickling anywhere in the backend or the add-on, and no code path
that could load code over the API. Walks the syntax tree, so comments and docstrings do not count."""

from __future__ import annotations

import ast

from .conftest import ROOT

UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}


def python_files():
    for folder in ("backend", "addon"):
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_no_pickle_no_unsafe_torch_load_no_multiprocessing_connections():
    problems = []
    for path in python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        rel = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    if name.split(".")[0] in UNSAFE_MODULES or name.startswith("multiprocessing.connection"):
                        problems.append(f"{rel}:{node.lineno} imports {name}")
            if isinstance(node, ast.Call):
                func = ast.unparse(node.func)
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                if func.endswith("torch.load") and keywords.get("weights_only") != "True":
                    problems.append(f"{rel}:{node.lineno} torch.load without weights_only=True")
                if func.endswith(("np.load", "numpy.load")) and keywords.get("allow_pickle") != "False":
                    problems.append(f"{rel}:{node.lineno} np.load without allow_pickle=False")
                if func in ("eval", "exec", "__import__"):
                    problems.append(f"{rel}:{node.lineno} calls {func}")
    assert not problems, "\n".join(problems)


def test_the_addon_client_imports_only_the_standard_library():
    import sys

    network_side = ("__init__.py", "protocol.py", "transport.py", "session.py")
    for path in sorted((ROOT / "addon" / "client").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1, (path.name, node.module)  # only its own package
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                top = name.split(".")[0]
                if top == "numpy" and path.name not in network_side:
                    continue  # numpy ships with Blender (PLY, conversions); the network side needs nothing else
                assert top in sys.stdlib_module_names or top == "__future__", f"{path.name} imports {name}"
                assert top not in ("bpy", "torch", "backend"), f"{path.name} imports {name}"
