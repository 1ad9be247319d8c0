"""The layers of the code (README: Architecture), checked with the graph import-linter builds.

``lint-imports`` (run by .ci/run) checks the contracts in pyproject.toml; this test adds what a layer
contract cannot see: a cycle inside a package, closed by an import inside a function. grimp's graph holds
function-local imports too, so an acyclic graph means no function-local import is there to hide a cycle.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

PACKAGES = ("liteheart_core", "server", "client", "simulations")


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & graph.modules) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in modules:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(edges[node]):
                work.append((node, i + 1))
                child = edges[node][i]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            for child in edges[node]:
                if child in on_stack:
                    low[node] = min(low[node], low[child])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_not_even_through_a_function_local_import() -> None:
    graph = grimp.build_graph(*PACKAGES)

    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    # Prepare: a graph with a -> b -> c -> a and a dangling d
    graph = grimp.ImportGraph()
    for module in ("p", "p.a", "p.b", "p.c", "p.d"):
        graph.add_module(module)
    for importer, imported in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.d", "p.a")):
        graph.add_import(importer=importer, imported=imported)

    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]


def test_the_import_contracts_hold() -> None:
    exe = Path(sys.executable).parent / "lint-imports"  # the one of this environment
    done = subprocess.run([str(exe)], capture_output=True, text=True, check=False)

    assert done.returncode == 0, done.stdout + done.stderr
