"""The tests' own house rule: shared helpers live in tests/support, and no test imports a conftest or another
test folder's modules (so a folder can move with its package); a node a file's tests share is started once for it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.support.source import statements

TESTS = Path(__file__).resolve().parent
FOLDERS = {p.name for p in TESTS.iterdir() if p.is_dir() and p.name not in ("support", "__pycache__")}


def _imports(path: Path) -> list[str]:
    names = []
    for node in statements(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def test_no_test_imports_a_conftest_or_another_test_folder() -> None:
    wrong = []
    for path in TESTS.rglob("*.py"):
        if "support" in path.relative_to(TESTS).parts:
            continue
        for name in _imports(path):
            parts = name.lstrip(".").split(".")
            if "conftest" in parts or name.startswith("..") or (
                    parts[0] == "tests" and len(parts) > 1 and parts[1] != "support") or (
                    not name.startswith(".") and parts[0] in FOLDERS):
                wrong.append(f"{path.relative_to(TESTS)}: {name}")
    assert wrong == [], "import shared helpers from tests.support instead:\n" + "\n".join(wrong)


def test_support_imports_no_test_module() -> None:
    for path in (TESTS / "support").glob("*.py"):
        for name in _imports(path):
            assert not name.startswith("tests.") or name.startswith("tests.support"), f"{path.name}: {name}"
            assert "conftest" not in name, f"{path.name}: {name}"


def test_test_folders_hold_only_tests_and_conftests() -> None:
    helpers = [str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py")
               if "support" not in p.relative_to(TESTS).parts
               and not (p.name.startswith("test_") or p.name in ("conftest.py", "__init__.py"))]
    assert helpers == [], f"move these helpers to tests/support: {helpers}"


def test_a_node_the_tests_of_a_file_share_is_set_up_once_for_the_file() -> None:
    """tests/compute/conftest.py puts the tests that take file_node on the file's event loop: pytest-asyncio must
    parametrize their loop at module scope, or the loop and the node on it are set up again for each test."""
    plan = subprocess.run([sys.executable, "-m", "pytest", "-q", "--setup-plan", "-p", "no:cacheprovider",
                           "tests/compute/test_compute_provenance.py"], cwd=TESTS.parent, capture_output=True,
                          text=True, timeout=120)
    lines = plan.stdout.splitlines()
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert sum("(fixtures used:" in line and "file_node" in line for line in lines) > 1, plan.stdout
    assert [line.split() for line in lines if line.split()[:3] == ["SETUP", "M", "file_node"]] == [
        ["SETUP", "M", "file_node", "(fixtures", "used:", "tmp_path_factory)"]], plan.stdout
