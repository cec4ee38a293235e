"""Type checkers see real types (API.md section 12): pyright and mypy --strict on
user-style scripts and on the examples, with no error allowed."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "tests" / "typing").glob("*.py"))
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def pyright_command():
    """The pyright installed beside this Python (the test extra's), if it can run here."""
    found = shutil.which("pyright", path=os.path.dirname(sys.executable)) or shutil.which("pyright")
    if found is None:
        pytest.skip("pyright is not installed (pip install -e '.[test]' installs it)")
    try:
        subprocess.run([found, "--version"], capture_output=True, timeout=300, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"pyright cannot run here: {e}")
    return found


@pytest.fixture(scope="module")
def pyright_report():
    """pyright's errors on the typing scripts and the examples (one run: it takes
    seconds to load JAX's types), by file name, and how many files it analysed."""
    result = subprocess.run(
        [pyright_command(), "--outputjson", "--pythonpath", sys.executable]
        + [str(p) for p in SCRIPTS + EXAMPLES],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(result.stdout)
    errors: dict[str, list[str]] = {}
    for d in report["generalDiagnostics"]:
        if d["severity"] == "error":
            line = f"{Path(d['file']).name}:{d['range']['start']['line'] + 1}: {d['message']}"
            errors.setdefault(Path(d["file"]).name, []).append(line)
    return errors, report["summary"]["filesAnalyzed"]


def test_the_typing_scripts_type_check_with_pyright(pyright_report):
    errors, analyzed = pyright_report
    found = [e for script in SCRIPTS for e in errors.get(script.name, [])]
    assert found == [], "\n".join(found)
    assert analyzed == len(SCRIPTS) + len(EXAMPLES) and len(SCRIPTS) >= 2


def test_the_examples_type_check_with_pyright(pyright_report):
    errors, _ = pyright_report
    found = [e for example in EXAMPLES for e in errors.get(example.name, [])]
    assert found == [], "\n".join(found)


def test_the_typing_scripts_and_examples_type_check_with_mypy_strict(tmp_path):
    """As a user running ``mypy --strict`` on their code sees it (pyproject.toml's
    [tool.mypy]: optax has no py.typed marker; parts of JAX are unannotated)."""
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[test]' installs it)")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path),  # the repository stays clean, as with pytest's own cache
            *map(str, SCRIPTS + EXAMPLES),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"no issues found in {len(SCRIPTS) + len(EXAMPLES)} source files" in result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_the_typing_scripts_run(script):
    """Every line the type checkers accept is one that works (assert_type is a
    no-op at run time)."""
    env = {**os.environ}
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
