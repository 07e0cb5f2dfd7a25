"""The Python examples run as documented (small settings), from another working folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest
import sklearn  # noqa: F401  (digits_mlp.py needs it: missing, this module fails to load, nothing skips)

import rung
from conftest import REPO, child_env

EXAMPLES = REPO / "examples" / "python"
# Each runs a whole example (seconds to a minute on two cores); a subprocess or notebook cell
# running past its own limit fails first, with its output.
pytestmark = pytest.mark.timeout(300)


def run(args: "list[str]", cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_quickstart(tmp_path: Path) -> None:
    out = run([str(EXAMPLES / "quickstart.py")], tmp_path)
    assert "best trial t" in out
    results = rung.ResultGrid.load(tmp_path / "rung_results" / "quickstart")
    assert len(results) == 100 and results.status == "finished"
    # ASHA cut most trials short of step 81.
    assert sum(r.metrics["step"] < 81 for r in results) > 50


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_digits_mlp(tmp_path: Path, executor: str) -> None:
    storage = tmp_path / "digits"
    args = ["--num-samples", "4", "--max-epochs", "6", "--concurrency", "2", "--executor", executor]
    run([str(EXAMPLES / "digits_mlp.py"), *args, "--storage", str(storage)], tmp_path)
    results = rung.ResultGrid.load(storage)
    assert results.status == "finished" and results.num_errors == 0
    best = results.best_result
    assert 0.5 < best.metrics["val_accuracy"] <= 1.0
    assert best.checkpoint is not None


def test_quickstart_notebook(tmp_path: Path) -> None:
    # The notebook imports ../python/learning_curve.py and stores its sweep beside itself:
    # run a copy, in the same layout, under tmp_path.
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "python").mkdir()
    shutil.copy(EXAMPLES / "learning_curve.py", tmp_path / "python")
    notebook = nbformat.read(REPO / "examples" / "notebooks" / "quickstart.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path / "notebooks")}}
    )
    client.execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    assert not [out for out in outputs if out.get("output_type") == "error"]
    text = "".join(out.get("text", "") for out in outputs)
    assert "best trial t" in text
    # The live progress table of the Jupyter display.
    html = "".join(str(out.get("data", {}).get("text/html", "")) for out in outputs)
    assert "<table>" in html and "completed" in html
