"""The package's layout rules (docs/design.md).

Imports flow one way between subpackages, counting every import statement (function-level ones
too), and no module imports itself back through others.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cpcspeech"

# Each unit's rank: a module may import units of a lower rank, its own subpackage, and nothing
# else. Units of equal rank are siblings and must not import each other (train and eval).
RANKS = {
    "errors": 0, "files": 0, "runtime": 0, "config": 0, "_moved": 0,
    "model": 1,
    "io": 2,
    "weights": 3,
    "train": 4, "eval": 4,
    "extract": 5, "lhotse_ext": 5,
    "cli": 6,
    "__init__": 7, "__main__": 7,
}  # fmt: skip
# inside the foundation, the order is errors -> files -> runtime -> config
FOUNDATION = ["errors", "files", "runtime", "config"]


def _unit(module: str) -> str:
    """'cpcspeech.io.audio' -> 'io'; 'cpcspeech.cli' -> 'cli'; 'cpcspeech' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every cpcspeech module that a file imports, at any depth: (line, 'cpcspeech.x.y')."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            if node.module and node.module.split(".")[0] == "cpcspeech":
                if node.module == "cpcspeech":  # from cpcspeech import x: x is a unit
                    found += [(node.lineno, f"cpcspeech.{a.name}") for a in node.names]
                else:
                    found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("cpcspeech")]
    return found


def _all_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_every_unit_has_a_rank():
    units = {_unit(m) for m in _all_modules()}
    assert units <= set(RANKS), f"modules with no rank in test_layout.RANKS: {units - set(RANKS)}"


def test_imports_flow_one_way_at_every_depth():
    bad = []
    for name, path in _all_modules().items():
        here = _unit(name)
        for line, target in _imports(path):
            there = _unit(target)
            if there == here and here not in FOUNDATION:
                continue  # inside one subpackage
            if here in FOUNDATION and there in FOUNDATION:
                ok = FOUNDATION.index(there) < FOUNDATION.index(here)
            else:
                ok = RANKS[there] < RANKS[here]
            if not ok and there != "_moved":
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} {here} -> {target}")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_no_import_cycle_between_modules():
    modules = _all_modules()
    graph = {m: set() for m in modules}
    for name, path in modules.items():
        for _, target in _imports(path):
            while target not in modules and "." in target:  # `from pkg.mod import name`
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                graph[name].add(target)
    # a package's __init__ that re-exports its own modules is not a cycle
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_only_cli_imports_typer():
    users = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.relative_to(PACKAGE).parts[0] not in ("cli", "cli.py")
        and "import typer" in p.read_text(encoding="utf-8")
    ]
    assert users == []


def test_no_cuda_calls_or_non_strict_loads_in_library():
    offenders = []
    for p in PACKAGE.rglob("*.py"):
        text = p.read_text(encoding="utf-8")
        if ".cuda()" in text or "strict=False" in text:
            offenders.append(str(p.relative_to(PACKAGE)))
    assert offenders == []


def test_size_limits():
    """Every module at most 600 lines, every function at most 80."""
    long_modules, long_functions = [], []
    for p in PACKAGE.rglob("*.py"):
        text = p.read_text(encoding="utf-8")
        if len(text.splitlines()) > 600:
            long_modules.append(f"{p.relative_to(PACKAGE)} ({len(text.splitlines())})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long_functions.append(
                        f"{p.relative_to(PACKAGE)}:{node.lineno} {node.name} ({n})"
                    )
    assert not long_modules and not long_functions, f"{long_modules} {long_functions}"
