"""Every notebook runs top to bottom on the sample data (one shared store for all of them)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def notebook_home(tmp_path_factory):
    """A store with the sample data loaded once, shared by the notebooks (they only add models)."""
    from fleetml.config import Settings
    from fleetml.simulate.sample import load_sample_into_store

    home = tmp_path_factory.mktemp("notebook-home")
    load_sample_into_store(Settings(home=home)).dispose()
    return home


def test_there_are_notebooks():
    names = [p.name for p in NOTEBOOKS]
    assert any(n.startswith("1.0-") for n in names), names


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, notebook_home, monkeypatch):
    monkeypatch.setenv("FLEETML_HOME", str(notebook_home))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=dict(os.environ))
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors
