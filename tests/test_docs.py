"""The documentation site builds with warnings as errors (a broken link, a stale API name in
docs/api.md or a docstring that does not render fails), and the README stays a front page."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs__site_builds_strict(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "api" / "index.html").exists()


def test_readme__is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 200
    # the two commands a newcomer needs, in the first screen
    head = "\n".join(lines[:20])
    assert "divjax run" in head and "pytest" in head
