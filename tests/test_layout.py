"""The package's layout: one mechanism per module, no private names across modules, no import cycle.

Read from the source (``ast``), not by importing: what each module imports at its top level,
and from where.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mpdemo"
MODULES = {path.stem: ast.parse(path.read_text()) for path in PACKAGE.glob("*.py")}


def imports_of(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """``(mpdemo module, names)`` for every ``from mpdemo[.module] import names`` at the module's top level."""
    found = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mpdemo":
            names = [alias.name for alias in node.names]
            if node.module == "mpdemo":  # from mpdemo import workloads: the modules themselves
                found += [(name, []) for name in names if name in MODULES]
            else:
                found.append((node.module.split(".")[1], names))
    return found


def graph() -> dict[str, set[str]]:
    return {name: {module for module, _ in imports_of(tree)} - {name} for name, tree in MODULES.items()}


def test_no_module_imports_another_modules_private_names():
    for name, tree in MODULES.items():
        for module, names in imports_of(tree):
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            assert not private, f"mpdemo/{name}.py imports {private} from mpdemo.{module}"


def test_the_import_graph_has_no_cycle():
    edges = graph()
    done, path = set(), []

    def visit(node: str) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(node):] + [node]))
        if node in done:
            return
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            visit(nxt)
        path.pop()
        done.add(node)

    for node in sorted(edges):
        visit(node)


def test_memory_maps_do_not_depend_on_shared_memory():
    seen, todo = set(), ["memmap"]
    while todo:
        module = todo.pop()
        for nxt in graph().get(module, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert "shm" not in seen


def test_every_module_says_what_it_holds_in_its_first_line():
    for name, tree in MODULES.items():
        doc = ast.get_docstring(tree)
        assert doc and len(doc.splitlines()[0]) > 20, f"mpdemo/{name}.py has no docstring naming its mechanism"


def test_init_imports_everything_at_the_top():
    tree = MODULES["__init__"]
    first_def = next(i for i, node in enumerate(tree.body) if isinstance(node, (ast.FunctionDef, ast.Assign)))
    later = [node for node in tree.body[first_def:] if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not later, "mpdemo/__init__.py imports after its first definition"
