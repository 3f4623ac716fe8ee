"""Package-level import graph of this repository, from the source (`ast`, nothing is imported).

    python tools/import_graph.py        prints `package -> imported packages` and any cycles; exit 1 on a cycle

Every import counts, lazy ones inside functions too (they are arrows all the same). Only the repository's
own top-level packages are nodes; the standard library and third-party packages are left out.
"""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "serve_app", "batch_jobs", "cluster", "digitiser", "contracts")


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every absolute import in one file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """{package: {other packages it imports}} over the packages that exist under root."""
    present = [p for p in PACKAGES if (root / p / "__init__.py").exists()]
    return {p: {q for f in (root / p).rglob("*.py") for q in imported_packages(f) if q in present and q != p}
            for p in present}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle found by a depth-first walk, each as [a, b, ..., a], each reported once."""
    found, seen = [], set()

    def walk(node, path):
        for nxt in sorted(g.get(node, ())):
            if nxt in path:
                cycle = path[path.index(nxt):] + [nxt]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    found.append(cycle)
            else:
                walk(nxt, path + [nxt])

    for start in sorted(g):
        walk(start, [start])
    return found


def main() -> int:
    g = graph()
    for p in sorted(g, key=PACKAGES.index):
        print(f"{p:11s} -> {', '.join(sorted(g[p], key=PACKAGES.index)) or '(nothing)'}")
    found = cycles(g)
    for c in found:
        print("cycle:", " -> ".join(c))
    if not found:
        print("no cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
