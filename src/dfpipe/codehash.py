"""Hashes of the dfpipe source each rule script runs, so that a change to a stage's logic reruns that stage.

Snakemake's `code` rerun trigger follows a rule's `script:` file only, not the modules it imports. The workflow
gives every rule a param holding `script_hashes(...)[stage]`: a hash of the dfpipe modules its script imports,
directly or through other dfpipe modules (imports inside functions count too). Found by reading the import
statements (ast), not by importing anything, so it costs milliseconds per workflow load."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = "dfpipe"
# Modules whose changes cannot change any output: log lines only, and the top package's version string.
NOT_HASHED = frozenset({f"{PACKAGE}.runlog", PACKAGE})


def module_file(name: str, package_dir: Path) -> Path | None:
    """The source file of dfpipe module `name` ('dfpipe.x.y'), or None when `name` is not a module."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(source: str, name: str, package_dir: Path, is_package: bool = False) -> set[str]:
    """The dfpipe modules that the source of module `name` imports, with the packages that hold them (importing
    `a.b.c` runs `a/b/__init__.py` too)."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _statements(ast.parse(source).body):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            base = from_module(node, package)
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if module_file(sub, package_dir) else base)
    with_packages = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}
    return {m for m in with_packages if module_file(m, package_dir)}


def from_module(node: ast.ImportFrom, package: str) -> str:
    """The module a `from … import` statement in package `package` names, relative levels resolved."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    return ".".join([*parts[: len(parts) - (node.level - 1)], *([node.module] if node.module else [])])


def _statements(body: list[ast.stmt]):
    """Every statement, nested ones included (imports are statements: walking expressions too costs 3x)."""
    for node in body:
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            inner = getattr(node, field, None)
            if isinstance(inner, list):
                yield from _statements(inner)


def closure(roots: set[str], package_dir: Path, cache: dict[str, set[str]] | None = None) -> set[str]:
    """`roots` and every dfpipe module they import, transitively (`cache`: module -> its imports, shared
    between calls so each module is parsed once)."""
    cache = {} if cache is None else cache
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in cache:
            path = module_file(name, package_dir)
            cache[name] = imported_modules(path.read_text(), name, package_dir, path.name == "__init__.py")
        todo.extend(cache[name])
    return seen


def source_hash(modules: set[str], package_dir: Path) -> str:
    """A short hash of the source text of `modules` (minus NOT_HASHED), with their names."""
    digest = hashlib.sha256()
    for name in sorted(modules - NOT_HASHED):
        digest.update(name.encode() + b"\0" + module_file(name, package_dir).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def script_hashes(scripts_dir: Path, package_dir: Path) -> dict[str, str]:
    """Per rule script (by stem, e.g. 'faces'): the hash of the dfpipe source it runs."""
    hashes, cache = {}, {}
    for script in sorted(Path(scripts_dir).glob("*.py")):
        roots = imported_modules(script.read_text(), "__script__", package_dir)
        hashes[script.stem] = source_hash(closure(roots, package_dir, cache), package_dir)
    return hashes


def script_modules(script: Path, package_dir: Path) -> set[str]:
    """The dfpipe modules a rule script runs (for tests and for explaining a rerun)."""
    return closure(imported_modules(Path(script).read_text(), "__script__", package_dir), package_dir)
