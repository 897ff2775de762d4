"""The code passes the project's linter (ruff.toml: pyflakes, pycodestyle, import order, bugbear, pyupgrade),
and the library's public names all exist."""
import subprocess
import sys
from pathlib import Path

import core

PROJECT = Path(__file__).resolve().parents[1]


def test_the_code_passes_the_linter():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=PROJECT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_public_name_of_the_library_imports():
    assert [name for name in core.__all__ if not hasattr(core, name)] == []
