"""The package's shape: no import circle among odbench's modules (imports inside functions count:
a function-local import that hides a circle is still one), and no module over 700 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "odbench"
MAX_LINES = 700


def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module that ``name`` (a module, or a name inside one) lives in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported package module: line}, from every import statement of the file, at
    module level or inside a function.  A module's import of its own package (``__init__``)
    is left out: Python runs a package's ``__init__`` first anyway."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = _owner(name, modules)
                if target and target != module and not module.startswith(target + "."):
                    edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def _describe(group: list[str], graph: dict[str, dict[str, int]]) -> str:
    ties = [f"{a} -> {b} (line {graph[a][b]})" for a in group for b in graph[a] if b in group]
    return "; ".join(ties)


def test_the_circle_finder_finds_a_function_local_circle(tmp_path: Path) -> None:
    """The walker itself: a circle hidden in a function, a relative import, a package face."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import f\n")
    (pkg / "a.py").write_text("import pkg\n\ndef f():\n    from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def g():\n    from ..a import f\n")
    (pkg / "c.py").write_text("X = 1\n")
    graph = imports(_modules(pkg))
    assert graph["pkg.a"] == {"pkg.sub.b": 4}  # its own package face is not an edge
    assert circles(graph) == [["pkg.a", "pkg.sub.b"]]
    (pkg / "sub" / "b.py").write_text("def g():\n    from pkg import c\n")
    assert circles(imports(_modules(pkg))) == []


def test_no_import_circle() -> None:
    graph = imports(_modules(PACKAGE))
    found = circles(graph)
    assert not found, "import circles: " + " | ".join(_describe(g, graph) for g in found)


def test_no_module_over_700_lines() -> None:
    sizes = {p: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    big = {str(p.relative_to(PACKAGE.parent)): n for p, n in sizes.items() if n > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_commands_do_not_import_the_cli() -> None:
    """Commands and benchmarks take their errors from odbench.errors and their shared options
    from odbench.commands.options; odbench.cli only finds and runs them."""
    graph = imports(_modules(PACKAGE))
    users = sorted(
        m
        for m, edges in graph.items()
        if m.startswith(("odbench.commands", "odbench.bench")) and "odbench.cli" in edges
    )
    assert not users, f"import odbench.errors / odbench.commands.options instead: {users}"


def test_library_and_benchmarks_import_no_command_module() -> None:
    """Commands are thin: what they do lives in the library, so nothing outside the CLI imports
    a command module; benchmarks (themselves commands) share only ``commands.options``."""
    graph = imports(_modules(PACKAGE))
    wrong = sorted(
        f"{m} -> {target} (line {line})"
        for m, edges in graph.items()
        if not m.startswith(("odbench.commands", "odbench.cli"))
        for target, line in edges.items()
        if target.startswith("odbench.commands")
        and not (m.startswith("odbench.bench") and target == "odbench.commands.options")
    )
    assert not wrong, f"move what these use out of odbench/commands/: {wrong}"
