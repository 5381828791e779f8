"""examples/quickstart.ipynb executes top to bottom in tiny mode (DIVJAX_NOTEBOOK_TINY=1).

Code cells run in order in one namespace with plain `exec`; IPython magics and shell lines
(`%pip ...`, `!...`) are skipped. nbformat reads (and validates) the notebook when installed; the
file is plain JSON otherwise.
"""

import json
import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def read_notebook(path: Path) -> list[str]:
    try:
        import nbformat
    except ImportError:
        nb = json.loads(path.read_text())
        assert nb["nbformat"] == 4
        cells = nb["cells"]
    else:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        cells = nb.cells
    out = []
    for c in cells:
        if c["cell_type"] == "code":
            src = c["source"] if isinstance(c["source"], str) else "".join(c["source"])
            out.append(src)
    return out


def strip_magics(src: str) -> str:
    return "\n".join("pass  # " + line if line.lstrip().startswith(("%", "!")) else line
                     for line in src.splitlines())


def test_notebook__quickstart_runs_in_tiny_mode(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("DIVJAX_NOTEBOOK_TINY", "1")
    monkeypatch.chdir(tmp_path)
    cells = read_notebook(NOTEBOOK)
    ns = {"__name__": "__main__"}
    for i, src in enumerate(cells):
        try:
            exec(compile(strip_magics(src), f"{NOTEBOOK.name}[cell {i}]", "exec"), ns)
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"cell {i} failed: {type(e).__name__}: {e}")
    assert ns["TINY"] and {"divshare", "adpsgd"} & set(ns["movielens"])
    assert (tmp_path / "runs" / "quickstart-lr-sweep" / "summary.md").exists()
    assert os.environ["DIVJAX_NOTEBOOK_TINY"] == "1"


def test_notebook__install_cell_installs_the_badge_repository(monkeypatch):
    """Where divjax is missing (Colab) the install cell pip-installs the repository that the
    Colab badge opens (no placeholder); where it imports, the cell does nothing."""
    import importlib.util
    import re
    import subprocess

    nb = json.loads(NOTEBOOK.read_text())
    badge = re.search(r"colab\.research\.google\.com/github/([\w-]+/[\w-]+)/",
                      "".join(nb["cells"][0]["source"])).group(1)
    install = next(c for c in read_notebook(NOTEBOOK) if "pip" in c and "install" in c)
    assert "<" not in install, "placeholder left in the install cell"
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **k: calls.append(cmd))
    exec(compile(strip_magics(install), "install", "exec"), {})
    assert calls == []                                   # divjax imports here
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "divjax" else real(n, *a))
    exec(compile(strip_magics(install), "install", "exec"), {})
    assert len(calls) == 1 and calls[0][1:4] == ["-m", "pip", "install"]
    assert calls[0][-1] == f"divjax[data] @ git+https://github.com/{badge}"


def test_notebook__cifar10_without_data_is_skipped_with_the_reason(tmp_path, monkeypatch,
                                                                    capsys):
    """Full mode, no CIFAR-10 copy: the CIFAR-10 cell prints why and the notebook goes on."""
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.delenv("DIVJAX_NOTEBOOK_TINY", raising=False)
    monkeypatch.setenv("DIVJAX_CIFAR10_DIR", str(tmp_path / "no-cifar"))
    cells = read_notebook(NOTEBOOK)
    setup = next(c for c in cells if "def preset(" in c)
    cell = next(c for c in cells if "cifar10-small" in c)
    ns = {"__name__": "__main__"}
    exec(compile(strip_magics(setup), "setup", "exec"), ns)
    exec(compile(strip_magics(cell), "cifar", "exec"), ns)
    assert ns["cifar"] is None
    assert "CIFAR-10 skipped: " in capsys.readouterr().out
