"""The README's main job (scripts/demo.sh = setup + scripts/demo.py) classifies the real photos end to end."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.server
def test_demo_classifies_the_photos_over_http_and_grpc():
    result = subprocess.run([sys.executable, "scripts/demo.py", "--top-k", "1"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "== HTTP ==" in result.stdout and "== GRPC ==" in result.stdout
    # Top-1 per photo, once per protocol: chelsea is a cat (281-285), coffee is espresso (967).
    assert result.stdout.count("espresso (967)") == 2
    assert sum(result.stdout.count(f"({c})") for c in range(281, 286)) >= 2
