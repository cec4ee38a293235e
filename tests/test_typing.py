"""Type checkers see real types (API.md section 12): pyright on a user-style script."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "typing" / "user_script.py"


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


def test_a_realistic_user_script_type_checks_without_errors():
    pyright = pyright_command()
    result = subprocess.run(
        [pyright, "--outputjson", "--pythonpath", sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(result.stdout)
    errors = [
        f"line {d['range']['start']['line'] + 1}: {d['message']}"
        for d in report["generalDiagnostics"]
        if d["severity"] == "error"
    ]
    assert errors == [], "\n".join(errors)
    assert report["summary"]["filesAnalyzed"] == 1
