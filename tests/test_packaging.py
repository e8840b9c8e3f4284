"""What production installs is the product alone, and what the checkout installs is pinned.

The production wheel (pyproject.toml) holds the coordinator, the agent, the user's client
(client/, `pvesphere`) and shared/ with their package data; the emulator and the demo
harness are the second distribution (devtools/pyproject.toml), installed in the checkout
only. The wheel is built for real from a copy of the checkout (pvesim/ and demo/ included,
so that leaving them out is the configuration's doing) and run from its own files alone.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("coordinator", "agent", "shared", "client")
DEV_ONLY = ("pvesim", "demo", "benchmarks", "tests")
# In the checkout for developers only (`alembic revision --autogenerate`); `migrate` needs none.
NOT_SHIPPED = {"coordinator/db/alembic.ini"}
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".demo", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)

# Run with the interpreter's site-packages (the dependencies) but neither the checkout nor
# the .pth files of its editable installs: the product's modules can come from the wheel only.
RUN_FROM_WHEEL = """
import contextlib, importlib, io, json, sys
wheel, site_dirs, dev_only = sys.argv[1], json.loads(sys.argv[2]), set(json.loads(sys.argv[3]))
sys.path[:0] = [wheel]
sys.path += site_dirs
asked = []

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in dev_only:
            asked.append(name)
            raise ImportError(f"{name} is not part of the product")
        return None

sys.meta_path.insert(0, Refuse())
modules = json.loads(sys.stdin.read())
for name in modules:
    importlib.import_module(name)
helps = {}
for prog, module in (
    ("pvesphere-agent", "agent.cli"),
    ("pvesphere-coordinator", "coordinator.cli"),
    ("pvesphere", "client.cli"),
):
    out = io.StringIO()
    sys.argv = [prog, "--help"]
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        importlib.import_module(module).main()
    helps[prog] = out.getvalue()
from coordinator.db.migrate import SCHEMA_HEAD, head_revision
print(json.dumps({
    "outside": sorted(
        n for n, m in sys.modules.items()
        if n.partition(".")[0] in {"coordinator", "agent", "shared", "client"}
        and not (getattr(m, "__file__", None) or wheel).startswith(wheel)
    ),
    "asked": asked,
    "helps": helps,
    "head": [head_revision(), SCHEMA_HEAD],
}))
"""


def _product_files() -> set[str]:
    files = set()
    for top in PRODUCT:
        for path in (REPO / top).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.add(path.relative_to(REPO).as_posix())
    return files - NOT_SHIPPED


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The production wheel, built as `pip wheel --no-deps` builds it (setuptools from the venv:
    offline, and no build/ left in the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(REPO, source, ignore=COPY_IGNORE)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp, source],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    (found,) = tmp.glob("pvesphere_templates-*.whl")
    return found


def test_the_production_wheel_holds_the_product_and_its_data_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        info = next(n.partition("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
        metadata = whl.read(f"{info}/METADATA").decode()
    assert {n.partition("/")[0] for n in names} == {*PRODUCT, info}
    # Every module and data file: migrations (not packages: no __init__.py), JSON, templates.
    assert _product_files() - names == set()
    assert "coordinator/db/migrations/versions/0001_initial.py" in names
    assert "shared/vm_config_facts.json" in names
    # The web dashboard's files (package data, not modules): what /ui/ serves from the wheel.
    assert {
        f"coordinator/ui/static/{n}" for n in ("index.html", "main.js", "token-link.js", "app.css")
    } <= names
    scripts = re.findall(r"^(\S+) = ", entry_points.partition("[console_scripts]")[2], re.M)
    assert sorted(scripts) == ["pvesphere", "pvesphere-agent", "pvesphere-coordinator"]
    # The test and lint tools are the checkout's (devtools), not the product's extras.
    assert "Provides-Extra" not in metadata


def test_the_product_runs_from_its_wheel_without_the_dev_tools(wheel: Path, tmp_path: Path) -> None:
    unpacked = tmp_path / "wheel"
    with zipfile.ZipFile(wheel) as whl:
        whl.extractall(unpacked)
    modules = sorted(
        ".".join(path.relative_to(unpacked).with_suffix("").parts).removesuffix(".__init__")
        for top in PRODUCT
        for path in (unpacked / top).rglob("*.py")
        if "migrations" not in path.parts  # Alembic's scripts: loaded by head_revision() below
    )
    assert len(modules) > 100
    site_dirs = site.getsitepackages()
    ran = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            RUN_FROM_WHEEL,
            str(unpacked),
            json.dumps(site_dirs),
            json.dumps(DEV_ONLY),
        ],
        input=json.dumps(modules),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert result["asked"] == []  # nothing tried to import pvesim, demo, benchmarks or tests
    assert result["outside"] == []  # every product module came from the wheel
    for prog, text in result["helps"].items():
        assert text.startswith(f"usage: {prog}") and ("upload" if prog == "pvesphere" else "serve") in text
    head, expected = result["head"]
    assert head == expected  # the migrations are in the wheel, and Alembic reads them there


def test_the_product_never_imports_the_dev_tools() -> None:
    """Also the imports a module makes only when a function runs, which importing it does not show."""
    found = []
    for top in PRODUCT:
        for path in (REPO / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                found += [f"{path.relative_to(REPO)}: {n}" for n in names if n.partition(".")[0] in DEV_ONLY]
    assert found == []


def _locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        name, _, version = line.partition("==")
        pins[canonicalize_name(name)] = version
    return pins


def _declared() -> list[Requirement]:
    """What the two distributions ask for: the product, and the dev tools with all their extras."""
    product = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    devtools = tomllib.loads((REPO / "devtools" / "pyproject.toml").read_text())["project"]
    wanted = [*product["dependencies"], *devtools["dependencies"]]
    for extra in devtools["optional-dependencies"].values():
        wanted += extra
    own = {canonicalize_name(product["name"]), canonicalize_name(devtools["name"])}
    return [r for r in map(Requirement, wanted) if canonicalize_name(r.name) not in own]


def _needed(roots: list[Requirement]) -> set[str]:
    """Every distribution the roots need, through the installed ones' metadata."""
    seen: set[tuple[str, str]] = set()  # (distribution, extra or "")
    todo = [(r, "") for r in roots]
    while todo:
        req, context = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": context}):
            continue
        name = canonicalize_name(req.name)
        for extra in ["", *sorted(req.extras)]:
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            try:
                requires = distribution(name).requires or []
            except PackageNotFoundError:
                continue  # not installed: the comparison with the lock names it
            todo += [(Requirement(r), extra) for r in requires]
    return {name for name, _ in seen}


def test_requirements_lock_pins_exactly_what_the_checkout_needs() -> None:
    """bootstrap installs the lock; `make lock` re-pins it after a change to either pyproject."""
    pins = _locked()
    declared = _declared()
    assert _needed(declared) == set(pins), "run make lock: the lock pins more or less than is needed"
    out_of_bounds = [
        f"{r} (locked: {pins[canonicalize_name(r.name)]})"
        for r in declared
        if pins[canonicalize_name(r.name)] not in r.specifier
    ]
    assert out_of_bounds == []
