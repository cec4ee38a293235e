"""docs/tutorial.ipynb runs top to bottom in a real kernel (nbclient), then again in
the same kernel, as a researcher re-running every cell would."""

import os
import pathlib

import nbclient  # the notebook extra, which the test extra includes
import nbformat
import pytest

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "docs" / "tutorial.ipynb"


@pytest.fixture(scope="module")
def executed():
    """The notebook after two runs of every cell, and the outputs of each run."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel inherits the environment: one CPU device, as a user's notebook
    # would have (conftest forces 8 for the tests).
    flags = os.environ.pop("XLA_FLAGS", None)
    runs = []
    try:
        client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3")
        with client.setup_kernel():
            for _ in range(2):
                for index, cell in enumerate(notebook.cells):
                    client.execute_cell(cell, index)
                runs.append(nbformat.reads(nbformat.writes(notebook), as_version=4))  # a copy
    finally:
        if flags is not None:
            os.environ["XLA_FLAGS"] = flags
    return runs


def outputs(notebook, kind):
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            if out.output_type == kind:
                yield out


def test_every_cell_runs_twice_without_errors(executed):
    for run in executed:
        assert [f"{e.ename}: {e.evalue}" for e in outputs(run, "error")] == []


@pytest.mark.parametrize("run", [0, 1])
def test_the_tutorial_shows_what_it_promises(executed, run):
    notebook = executed[run]
    text = "".join(out.text for out in outputs(notebook, "stream"))
    assert "shared: True features/scale" in text
    assert "Total: 1,185 parameters" in text
    assert "loss decreased: True" in text
    assert "frozen weights bit-identical: True" in text
    assert "pruned weights stay zero: True" in text and "restored: True" in text
    rich = [out.data for out in outputs(notebook, "execute_result")]
    html = "".join(data.get("text/html", "") for data in rich)
    assert "MLP &#x27;mlp" in html  # the model as a table
    assert "Optimizer &#x27;optimizer" in html
    assert "mask 50.0%" in html  # the pruned weight's mask
    updated = [out for out in outputs(notebook, "display_data") if "text/plain" in out.data]
    assert any("step 300/300 [####################]" in out.data["text/plain"] for out in updated)
    assert [out for out in outputs(notebook, "display_data") if "image/png" in out.data]
