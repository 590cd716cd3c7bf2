"""The package's import graph: no cycle between its sub-packages, and the floor modules import no stage."""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from pathlib import Path

import meshforge

PACKAGE = Path(meshforge.__file__).resolve().parent


def unit_of(module: str) -> str:
    """``meshforge.mesh.bake`` → ``mesh``; ``meshforge.pipeline`` → ``pipeline``; ``meshforge`` → ``<root>``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def import_graph() -> dict[str, dict[str, set[str]]]:
    """``{unit: {imported unit: {files}}}`` from every ``import``/``from … import`` in the package's source
    (function-level and ``TYPE_CHECKING`` imports included: a cycle through them is still a cycle)."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts)
        package = module[: -len(".__init__")] if module.endswith(".__init__") else module.rsplit(".", 1)[0]
        module = package if module.endswith(".__init__") else module
        src = unit_of(module)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target == "meshforge" or target.startswith("meshforge."):
                    dst = unit_of(target)
                    if dst != src:
                        graph[src][dst].add(str(path.relative_to(PACKAGE)))
    return graph


def find_cycle(graph: dict[str, dict[str, set[str]]]) -> list[str] | None:
    """One cycle of units (``[a, b, …, a]``), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_no_import_cycle_between_sub_packages():
    graph = import_graph()
    assert graph["cli"], "the graph reader found no imports at all"
    cycle = find_cycle(graph)
    if cycle is not None:
        where = {f"{a} → {b}": sorted(graph[a][b]) for a, b in itertools.pairwise(cycle)}
        raise AssertionError(f"import cycle {' → '.join(cycle)}: {where}")


def test_the_floor_imports_no_stage():
    """``geometry`` (primitives) and ``gltf`` (spec constants) sit under every stage."""
    graph = import_graph()
    assert set(graph.get("geometry", {})) <= {"gltf"}, dict(graph["geometry"])
    assert set(graph.get("gltf", {})) == set(), dict(graph["gltf"])
    for stage in ("mesh", "fields", "io", "export", "eval"):
        assert "geometry" in graph[stage], f"{stage} no longer uses the geometry floor?"


def test_the_cycle_finder_finds_a_cycle():
    graph: dict[str, dict[str, set[str]]] = {"a": {"b": {"x"}}, "b": {"c": {"y"}}, "c": {"a": {"z"}}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": {"x"}}, "b": {}}) is None


#: the most lines a module of a package split along its seams may have (issue 9: "the shape of the code")
MAX_MODULE_LINES = 600


def test_split_packages_keep_their_modules_small():
    """``io`` (scene, glTF reader, trimesh formats) and ``backends/triposr`` (network, Triton kernels) were
    split along their seams; no module of theirs grows back past :data:`MAX_MODULE_LINES`."""
    for package in (PACKAGE / "io", PACKAGE / "backends" / "triposr"):
        for path in sorted(package.glob("*.py")):
            n = len(path.read_text(encoding="utf-8").splitlines())
            assert n <= MAX_MODULE_LINES, f"{path.relative_to(PACKAGE)} has {n} lines (> {MAX_MODULE_LINES})"


def test_eval_computes_and_prints_nothing():
    """``eval`` returns numbers and dicts; the text people read (``meshforge inspect``) is written elsewhere."""
    for path in sorted((PACKAGE / "eval").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            printing = (isinstance(node, ast.Name) and node.id in ("print", "TextIO")) or (
                isinstance(node, ast.Attribute)
                and node.attr in ("stdout", "stderr")
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
            )
            assert not printing, f"eval/{path.name}:{getattr(node, 'lineno', '?')} writes text for people"
