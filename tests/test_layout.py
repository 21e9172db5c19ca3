"""The layout holds: the core stays sans-I/O, and no file sends a reader out of the repository.

The core is the top level of ``qqconn/`` that decides and parses: :data:`CORE`. None of it may
import asyncio, websockets, httpx or ``time`` (a clock comes in on events), nor anything of the
shells around it (the driver, the CLI, the demo, the testing kit). Two independent checks:

* statically, every ``import`` statement in the module's source, wherever it stands (inside
  functions and ``TYPE_CHECKING`` blocks too), relative imports resolved;
* dynamically, the module imported alone in a fresh interpreter, with every import statement
  and ``importlib.import_module`` call recorded together with the module that made it: no
  qqconn module pulls a forbidden one in, directly or through another qqconn module, and no
  shell module ends up loaded. (asyncio and ``time`` as such are in ``sys.modules`` anyway,
  brought by structlog and logging; what counts is who imported them.)
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "qqconn"

#: The sans-I/O core, named one by one so that a module missing from this list, or from the
#: tree, is noticed. endings and checkpoint come with issue 9's machine work.
CORE = (
    "machine",
    "events",
    "commands",
    "policy",
    "protocol",
    "errors",
    "endings",
    "observations",
    "checkpoint",
)

#: Top-level modules and packages of qqconn/ that are not core: the shells and their helpers.
SHELL = (
    "__init__",
    "__main__",
    "_log",
    "statecharts",
    "driver",
    "cli",
    "demo",
    "testing",
    "metrics",
    "ops",
    "webhook",
    "redis",
)

#: Modules the core may not import (a prefix matches its submodules too).
FORBIDDEN = (
    "asyncio",
    "websockets",
    "httpx",
    "time",
    "qqconn.driver",
    "qqconn.cli",
    "qqconn.demo",
    "qqconn.testing",
)

#: Of those, the ones that must not even be loaded after importing a core module alone
#: (asyncio and time are loaded by structlog and logging, which the core may use).
NOT_LOADED = ("websockets", "httpx", "qqconn.driver", "qqconn.cli", "qqconn.demo", "qqconn.testing")


def _forbidden(name: str) -> bool:
    return any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)


def _exists(name: str) -> bool:
    """Is the core module ``name`` in qqconn/, as a module or as a package?"""
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name / "__init__.py").exists()


def _present() -> list[str]:
    return [name for name in CORE if _exists(name)]


def _core_files() -> list[tuple[str, Path]]:
    """Every source file of the core, as (dotted module name, path): a core package's
    submodules are core too (``qqconn.machine.table``)."""
    files = []
    for name in _present():
        single = PACKAGE / f"{name}.py"
        if single.exists():
            files.append((f"qqconn.{name}", single))
            continue
        for path in sorted((PACKAGE / name).rglob("*.py")):
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            dotted = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files.append((dotted, path))
    return files


def static_violations(source: str, module: str) -> list[str]:
    """Forbidden imports in ``source`` (the module ``module``, e.g. ``qqconn.machine``)."""
    found = []
    package = module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        found += [f"line {node.lineno}: {name}" for name in names if _forbidden(name)]
    return found


#: Run in a fresh interpreter: import one module, report who imported what, and what is loaded.
_PROBE = textwrap.dedent(
    """
    import builtins, importlib, json, sys
    target, prefix = sys.argv[1], sys.argv[2]
    seen = []
    real_import, real_import_module = builtins.__import__, importlib.import_module

    def importer(globals_):
        return (globals_ or {}).get("__name__", "")

    def spy(name, globals=None, locals=None, fromlist=(), level=0):
        who = importer(globals)
        if who.startswith(prefix):
            full = name
            if level:
                base = (globals or {}).get("__package__") or ""
                parts = base.split(".")
                anchor = ".".join(parts[: len(parts) - level + 1])
                full = f"{anchor}.{name}" if name else anchor
            seen.append([who, full])
            seen.extend([who, f"{full}.{item}"] for item in fromlist or ())
        return real_import(name, globals, locals, fromlist, level)

    def spy_module(name, package=None):
        who = importer(sys._getframe(1).f_globals)
        if who.startswith(prefix):
            seen.append([who, name])
        return real_import_module(name, package)

    builtins.__import__, importlib.import_module = spy, spy_module
    importlib.import_module(target)
    print(json.dumps({"imports": seen, "loaded": sorted(sys.modules)}))
    """
)


def dynamic_report(module: str, prefix: str, path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """Import ``module`` alone in a fresh interpreter (``path`` first on sys.path); return the
    imports made by modules whose name starts with ``prefix`` (importer, imported), and every
    module loaded."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, module, prefix],
        capture_output=True,
        text=True,
        cwd=path,
        env={"PYTHONPATH": str(path), "PATH": "", "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"importing {module} failed:\n{done.stderr[-2000:]}"
    report = json.loads(done.stdout.splitlines()[-1])
    imports = [(str(who), str(name)) for who, name in report["imports"]]
    return imports, [str(name) for name in report["loaded"]]


def dynamic_violations(module: str, prefix: str = "qqconn", path: Path = ROOT) -> list[str]:
    """What importing ``module`` alone pulls in against the rules, as readable lines."""
    imports, loaded = dynamic_report(module, prefix, path)
    found = [
        f"{who} imports {name}" for who, name in imports if _forbidden(name) and not _is_shell(who)
    ]
    found += [f"{name} is loaded" for name in loaded if _not_loaded(name)]
    return sorted(set(found))


def _is_shell(module: str) -> bool:
    parts = module.split(".")
    return len(parts) > 1 and parts[0] == "qqconn" and parts[1] in SHELL and parts[1] != "_log"


def _not_loaded(name: str) -> bool:
    return any(name == bad or name.startswith(bad + ".") for bad in NOT_LOADED)


# -- the core ---------------------------------------------------------------------------------


def test_every_core_module_exists() -> None:
    """Each module of CORE is in qqconn/ (endings and checkpoint arrive with issue 9's machine work)."""
    missing = [name for name in CORE if not _exists(name)]
    assert not missing, f"core modules missing from qqconn/: {missing}"


def test_every_top_level_module_is_placed() -> None:
    """Every top-level module or package of qqconn/ is either core or a named shell: a new
    one must be placed on purpose (and, if core, checked below)."""
    top = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()
    }
    unplaced = sorted(top - set(CORE) - set(SHELL))
    assert not unplaced, f"place these in tests/test_layout.py (CORE or SHELL): {unplaced}"


@pytest.mark.parametrize(("module", "path"), _core_files(), ids=[m for m, _ in _core_files()])
def test_core_module_imports_nothing_forbidden(module: str, path: Path) -> None:
    """The core module's source imports no asyncio, websockets, httpx, time, driver, CLI,
    demo or testing, anywhere in the file (each module of a core package too)."""
    source = path.read_text(encoding="utf-8")
    is_package = path.name == "__init__.py"
    found = static_violations(source, f"{module}.__init__" if is_package else module)
    assert not found, f"{path.relative_to(ROOT)}: {found}"


@pytest.mark.parametrize("module", [m for m, _ in _core_files()])
def test_core_module_pulls_in_nothing_forbidden(module: str) -> None:
    """Imported alone in a fresh interpreter, the core module (and every qqconn module it
    brings) imports nothing forbidden, and no shell module or I/O library is loaded."""
    found = dynamic_violations(module)
    assert not found, f"import {module}: {found}"


def test_core_packages_are_walked() -> None:
    """The machine is a package: each of its modules is checked on its own, so a forbidden
    import in any of them (not only its ``__init__``) is seen."""
    modules = {m for m, _ in _core_files()}
    assert {"qqconn.machine", "qqconn.machine.table", "qqconn.machine.model"} <= modules
    assert "qqconn.events" in modules


# -- the checks can fail ----------------------------------------------------------------------


def test_static_check_catches_every_way_of_writing_an_import() -> None:
    """The source check flags plain, from, relative, nested and aliased forbidden imports."""
    source = textwrap.dedent(
        """
        import json
        import asyncio.events
        from time import monotonic
        from . import driver
        from .cli import main as _m
        def later():
            import httpx as h
        from qqconn.testing import FakeGateway
        from qqconn import events
        """
    )
    found = static_violations(source, "qqconn.machine")
    assert sorted(f.split(": ")[1] for f in found) == [
        "asyncio.events",
        "httpx",
        "qqconn.cli",
        "qqconn.cli.main",
        "qqconn.driver",
        "qqconn.testing",
        "qqconn.testing.FakeGateway",
        "time",
        "time.monotonic",
    ]


def test_dynamic_check_catches_an_import_hidden_from_the_parser(tmp_path: Path) -> None:
    """The fresh-interpreter check flags a module that imports time through importlib, and
    one that reaches asyncio through another module of its package."""
    pkg = tmp_path / "probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "hidden.py").write_text("import importlib\nclock = importlib.import_module('time')\n")
    (pkg / "helper.py").write_text("import asyncio\n")
    (pkg / "core.py").write_text("from probe import helper\n")
    assert static_violations((pkg / "hidden.py").read_text(), "probe.hidden") == []
    imports, _ = dynamic_report("probe.hidden", "probe", tmp_path)
    assert ("probe.hidden", "time") in imports
    imports, loaded = dynamic_report("probe.core", "probe", tmp_path)
    assert ("probe.helper", "asyncio") in imports and "probe.helper" in loaded


# -- small modules ----------------------------------------------------------------------------

#: No module under qqconn/ may be longer than this many lines (issue 9) ...
MAX_LINES = 500
#: ... except in these top-level packages (the CLI and the demo), and nowhere else.
LONG_ALLOWED = ("cli", "demo")


def too_long(root: Path, limit: int = MAX_LINES) -> list[str]:
    """Each ``*.py`` under ``root`` (outside LONG_ALLOWED) longer than ``limit`` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] in LONG_ALLOWED:
            continue
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit:
            found.append(f"{path.relative_to(root)}: {lines} lines")
    return found


def test_no_module_is_longer_than_the_limit() -> None:
    """Every module under qqconn/ but the CLI and the demo is at most MAX_LINES long."""
    assert len(list(PACKAGE.rglob("*.py"))) > 20  # the walk found the package
    found = too_long(PACKAGE)
    assert not found, f"split these (at most {MAX_LINES} lines):\n" + "\n".join(found)


def test_length_check_catches_a_long_module(tmp_path: Path) -> None:
    """A module over the limit is named, one at the limit passes, and cli/ and demo/ are
    exempt (only they)."""
    (tmp_path / "ok.py").write_text("x = 1\n" * 5)
    (tmp_path / "long.py").write_text("x = 1\n" * 6)
    for name in ("cli", "demo", "driver"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "big.py").write_text("x = 1\n" * 9)
    assert too_long(tmp_path, limit=5) == ["driver/big.py: 9 lines", "long.py: 6 lines"]


# -- no reader is sent out of the repository --------------------------------------------------

#: What points outside the repository: the spec's old home and the names of its files there.
#: (Built from parts, so this file does not match itself.)
OUTSIDE = re.compile(
    "|".join(
        [
            re.escape("shared" + "/"),
            re.escape("anchors" + ".md"),
            re.escape("qq-protocol" + ".md"),
            r"\b(?:anchors|qq-protocol) " + "§",
        ]
    )
)


def _tracked_files() -> list[Path]:
    done = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False, timeout=60
    )
    if done.returncode != 0:
        pytest.fail(f"git ls-files failed: {done.stderr.decode(errors='replace')}")
    return [ROOT / name for name in done.stdout.decode().split("\0") if name]


def test_no_file_points_a_reader_outside_the_repository() -> None:
    """No tracked file cites the spec's old home outside the repository (the folder or the
    file names OUTSIDE matches): the spec lives in docs/ (behaviour.md, protocol.md, peers.md)."""
    files = _tracked_files()
    assert len(files) > 20  # git found the repository, so the scan has work
    hits = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not hits, "cite docs/ instead:\n" + "\n".join(hits)


def test_outside_pattern_matches_what_it_should() -> None:
    """The pattern flags the four forms of an outside pointer and passes docs/ citations."""
    for line in (
        "see shared" + "/behaviour.md",
        "(qq-protocol" + ".md §3.1)",
        "anchors" + " § 8.3",
        "anchors" + ".md",
    ):
        assert OUTSIDE.search(line), line
    for line in ("docs/behaviour.md rule 10", "docs/protocol.md §3.1", "docs/peers.md §8.3"):
        assert not OUTSIDE.search(line), line


# -- the docs the code cites ------------------------------------------------------------------

DOCS = ROOT / "docs"


def _headings(path: Path) -> list[str]:
    return [
        ln.lstrip("#").strip()
        for ln in path.read_text(encoding="utf-8").splitlines()
        if ln.startswith("#")
    ]


def _rules() -> list[int]:
    text = (DOCS / "behaviour.md").read_text(encoding="utf-8")
    return [int(n) for n in re.findall(r"^(\d+)\. \*\*", text, flags=re.M)]


def test_behaviour_md_numbers_rules_1_to_23_in_order() -> None:
    """docs/behaviour.md states rules 1 to 23, each once, in order (code cites them by number)."""
    assert _rules() == list(range(1, 24))


def test_protocol_md_keeps_the_section_numbers() -> None:
    """docs/protocol.md has sections 0 to 9 with the subsections code and tests cite."""
    numbers = {h.split(" ", 1)[0].rstrip(".") for h in _headings(DOCS / "protocol.md")}
    wanted = {str(n) for n in range(10)} | {"1.1", "1.2", "1.3", "1.4", "1.5", "2.1", "2.2"}
    wanted |= {"2.3", "2.4", "3.1", "3.2", "3.3", "5.1", "5.2", "5.3"}
    assert wanted <= numbers, sorted(wanted - numbers)


_CITATION = re.compile(r"(behaviour|protocol|peers)\.md(?:`{0,2})\s*(?:§\s*|rules?\s+)([\w.]+)")


def test_every_citation_of_the_docs_names_something_they_have() -> None:
    """Each citation of a rule of docs/behaviour.md or a section of docs/protocol.md or
    docs/peers.md, in any tracked file, names a rule or section that exists."""
    sections = {
        name: {h.split(" ", 1)[0].rstrip(".") for h in _headings(DOCS / f"{name}.md")}
        for name in ("protocol", "peers")
    }
    titles = " ".join(_headings(DOCS / "behaviour.md"))
    rules = {str(n) for n in _rules()}
    seen = 0
    bad = []
    for path in _tracked_files():
        if path.suffix not in (".py", ".md", ".txt", ".toml", ".cfg", ""):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for doc, ref in _CITATION.findall(text):
            ref = ref.rstrip(".")
            seen += 1
            if doc == "behaviour":
                ok = ref in rules or (not ref[0].isdigit() and ref in titles)
            else:
                ok = ref in sections[doc]
            if not ok:
                bad.append(f"{path.relative_to(ROOT)}: {doc}.md {ref}")
    assert seen, "no citation found: the pattern is broken"
    assert not bad, "citations of something the docs do not have:\n" + "\n".join(bad)


def test_api_md_lists_every_public_name() -> None:
    """docs/api.md names every name of qqconn.__all__ and qqconn.testing.__all__."""
    import qqconn
    import qqconn.testing

    text = (DOCS / "api.md").read_text(encoding="utf-8")
    missing = [n for n in [*qqconn.__all__, *qqconn.testing.__all__] if f"`{n}`" not in text]
    assert not missing, f"docs/api.md does not list: {missing}"
