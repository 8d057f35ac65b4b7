"""The dfpipe import graph, read from the source with `ast` (nothing is imported): the modules depend on each other
one way (no cycle), no module uses another's underscore-private names, and imports sit at the top of a module
unless LAZY_IMPORTS says why that module imports inside functions.

Edges are the imports as written, at the top (`if TYPE_CHECKING:` ones too) and inside functions:
`from dfpipe.x import y` is an edge to dfpipe.x.y when that is a module, else to dfpipe.x; `import dfpipe.x.y` to
dfpipe.x.y. The packages a submodule import runs first (dfpipe.x's __init__) are no edge: a package that gathers its
submodules would otherwise form a cycle with each, though Python imports that fine."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dfpipe.codehash import from_module

PACKAGE = "dfpipe"
SRC = Path(__file__).resolve().parents[1] / "src"

# The modules that may import inside functions, each with its reason; every other module imports at its top, where
# a reader sees what it depends on and a cycle cannot hide. The workflow layer is what Snakemake reads at parse
# time (tests/test_workflow_imports.py): it must not load torch, timm, scikit-learn or matplotlib.
LAZY_IMPORTS = {
    "dfpipe.model_names": "read by the workflow layer: timm loads only when its cached list of names is missing",
    "dfpipe.models.experiments": "read by the workflow layer: building a detector loads torch and timm",
    "dfpipe.evaluation.test_sources": "read by the workflow layer: a kind's module (OpenCV, mediapipe, torch) "
    "loads only when an entry is scanned",
    "dfpipe.figures": "matplotlib's backend (Agg: jobs have no display) is chosen before pyplot first loads",
    "dfpipe.__main__": "the CLI: `dfpipe --help` and argument errors answer without loading torch",
    "dfpipe.apps.predict": "Grad-CAM (pytorch-grad-cam loads scikit-learn and scipy: seconds) only with --heatmap",
    "dfpipe.gpus": "claiming GPUs runs in short processes that need no torch; only model_job sets torch's threads",
    "dfpipe.evaluation.test_sources.ganfaces": "the DCGAN (torch) loads only when GAN faces are drawn: a test-source "
    "job imports every kind's module",
    "dfpipe.evaluation.probes.backbones": "optional dependency: open_clip, only for a CLIP backbone",
}


# -- the checker ------------------------------------------------------------------------------------------------
@dataclass
class Graph:
    """What the modules' imports say: `edges` (module -> the dfpipe modules it imports), `private` and `lazy`
    (one line each: where, and what)."""

    edges: dict[str, set[str]] = field(default_factory=dict)
    private: list[str] = field(default_factory=list)
    lazy: dict[str, list[str]] = field(default_factory=dict)


def read_package(src: Path, package: str = PACKAGE) -> dict[str, tuple[str, bool]]:
    """Module name -> (source, whether it is a package's __init__), for every module under `src/package`."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path.read_text(), is_package)
    return out


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_use(importer: str, owner: str, name: str, modules: set[str]) -> bool:
    """Whether `importer` using `owner`'s `name` uses another module's private name; a package's private
    submodule is its own modules' to import."""
    if not is_private(name):
        return False
    if f"{owner}.{name}" in modules and (importer == owner or importer.startswith(owner + ".")):
        return False
    return importer != owner


def _imports(node: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under `node`, with whether it runs inside a function."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function
        else:
            yield from _imports(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))


def analyse(sources: dict[str, tuple[str, bool]], package: str = PACKAGE) -> Graph:
    """The import graph of `sources` (as `read_package` gives them), private-name uses and imports in functions."""
    modules = set(sources)
    graph = Graph()
    for name, (source, is_package) in sources.items():
        edges = graph.edges.setdefault(name, set())
        here = name if is_package else name.rpartition(".")[0]
        aliases: dict[str, str] = {}  # a bound name -> the dfpipe module it stands for
        tree = ast.parse(source)
        for node, in_function in _imports(tree):
            if in_function:
                graph.lazy.setdefault(name, []).append(f"{name}:{node.lineno}: {ast.unparse(node)}")
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] != package:
                        continue
                    edges.add(alias.name)
                    parts = alias.name.split(".")
                    aliases[alias.asname or parts[0]] = alias.name if alias.asname else parts[0]
                    for i, part in enumerate(parts[1:], 1):
                        if _private_use(name, ".".join(parts[:i]), part, modules):
                            graph.private.append(f"{name}:{node.lineno}: import {alias.name}")
                continue
            base = from_module(node, here)
            if base.split(".")[0] != package:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                edges.add(sub if sub in modules else base)
                if sub in modules:
                    aliases[alias.asname or alias.name] = sub
                if _private_use(name, base, alias.name, modules):
                    graph.private.append(f"{name}:{node.lineno}: from {base} import {alias.name}")
        edges.discard(name)
        for node in ast.walk(tree):
            chain = _chain(node) if isinstance(node, ast.Attribute) else None
            if not chain or chain[0] not in aliases:
                continue
            owner = aliases[chain[0]]
            for i, part in enumerate(chain[1:], 1):
                if _private_use(name, owner, part, modules):
                    graph.private.append(f"{name}:{node.lineno}: {'.'.join(chain[: i + 1])}")
                    break
                if f"{owner}.{part}" not in modules:
                    break
                owner = f"{owner}.{part}"
        graph.private = list(dict.fromkeys(graph.private))
    return graph


def _chain(node: ast.Attribute) -> list[str] | None:
    """`a.b.c` as ["a", "b", "c"] for a plain dotted name; else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other in a circle (strongly connected, Tarjan's algorithm), each
    sorted, as one cycle through them: its modules in import order, the first repeated at the end."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = [stack.pop()]
            while group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(groups)


def a_cycle(group: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest cycle from the group's first module back to it, through the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for nxt in sorted(edges.get(node, set()) & members):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                todo.append(nxt)
    return group


# -- the package --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graph() -> Graph:
    return analyse(read_package(SRC))


def test_the_modules_import_each_other_one_way(graph):
    found = cycles(graph.edges)
    assert not found, "modules that import each other in a circle:\n" + "\n".join(
        f"  {', '.join(group)} (e.g. {' -> '.join(a_cycle(group, graph.edges))})" for group in found
    )


def test_no_module_uses_another_modules_private_names(graph):
    assert not graph.private, "private names of other modules (make them public or move them):\n" + "\n".join(
        "  " + line for line in graph.private
    )


def test_imports_inside_functions_only_where_a_reason_is_given(graph):
    unlisted = [line for module, lines in sorted(graph.lazy.items()) if module not in LAZY_IMPORTS for line in lines]
    assert not unlisted, (
        "imports inside functions (move them to the top, or give the module's reason in LAZY_IMPORTS):\n"
        + "\n".join("  " + line for line in unlisted)
    )


def test_every_lazy_import_reason_is_still_needed(graph):
    stale = sorted(set(LAZY_IMPORTS) - set(graph.lazy))
    assert not stale, f"LAZY_IMPORTS lists modules that import nothing inside functions: {stale}"


# -- the checker on made-up packages --------------------------------------------------------------------------------
def made_up(modules: dict[str, str]) -> dict[str, tuple[str, bool]]:
    """`read_package`'s answer for made-up module sources: a module with submodules is a package."""
    return {name: (text, any(other.startswith(name + ".") for other in modules)) for name, text in modules.items()}


def test_the_checker_resolves_submodules_names_and_relative_imports():
    sources = made_up(
        {
            "pkg": "",
            "pkg.a": "from pkg import b\nfrom pkg.c import thing\nimport pkg.d.e\n",
            "pkg.b": "",
            "pkg.c": "thing = 1\n",
            "pkg.d": "from . import e\nfrom .e import x\nfrom .. import b\n",
            "pkg.d.e": "from ..c import thing\nx = 1\n",
        }
    )
    edges = analyse(sources, "pkg").edges
    assert edges["pkg.a"] == {"pkg.b", "pkg.c", "pkg.d.e"}
    assert edges["pkg.d"] == {"pkg.d.e", "pkg.b"}
    assert edges["pkg.d.e"] == {"pkg.c"}


def test_the_checker_finds_a_cycle_through_a_lazy_import():
    sources = {
        "pkg": "",
        "pkg.a": "from pkg import b\n",
        "pkg.b": "import pkg.c\n",
        "pkg.c": "def f():\n    import pkg.a\n",
    }
    graph = analyse(made_up(sources), "pkg")
    assert cycles(graph.edges) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert a_cycle(["pkg.a", "pkg.b", "pkg.c"], graph.edges) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    assert graph.lazy == {"pkg.c": ["pkg.c:2: import pkg.a"]}
    assert cycles(analyse(made_up({**sources, "pkg.c": "x = 1\n"}), "pkg").edges) == []


def test_the_checker_finds_private_names_of_other_modules():
    sources = {
        "pkg": "",
        "pkg.a": "_secret = 1\n__version__ = '1'\nprint(_secret)\n",
        "pkg.b": "from pkg.a import _secret\n",
        "pkg.c": "import pkg.a as m\nfrom pkg import a\nprint(m._secret.real, a._secret, a.__version__)\n",
        "pkg.d": "import pkg.a\nprint(pkg.a._secret)\n",
        "pkg.e": "from pkg.a import __version__\n",
    }
    assert analyse(made_up(sources), "pkg").private == [
        "pkg.b:1: from pkg.a import _secret",
        "pkg.c:3: m._secret",
        "pkg.c:3: a._secret",
        "pkg.d:2: pkg.a._secret",
    ]


def test_a_package_may_import_its_own_private_submodules():
    sources = {
        "pkg": "",
        "pkg.p": "from pkg.p import _impl\n",
        "pkg.p._impl": "x = 1\n",
        "pkg.q": "from pkg.p import _impl\n",
    }
    assert analyse(made_up(sources), "pkg").private == ["pkg.q:1: from pkg.p import _impl"]
