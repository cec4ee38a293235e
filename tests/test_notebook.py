"""examples/notebook.ipynb runs top to bottom in a real kernel (nbclient), as a researcher would."""

import os
import pathlib

import nbclient  # the notebook extra, which the test extra includes
import nbformat
import pytest

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "examples" / "notebook.ipynb"


@pytest.fixture(scope="module")
def executed():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel inherits the environment: one CPU device, as a user's notebook
    # would have (conftest forces 8 for the tests).
    flags = os.environ.pop("XLA_FLAGS", None)
    try:
        nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    finally:
        if flags is not None:
            os.environ["XLA_FLAGS"] = flags
    return notebook


def outputs(notebook, kind):
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            if out.output_type == kind:
                yield out


def test_the_notebook_runs_without_errors(executed):
    errors = [f"{e.ename}: {e.evalue}" for e in outputs(executed, "error")]
    assert errors == []


def test_the_notebook_shows_what_a_researcher_looks_at(executed):
    text = "".join(out.text for out in outputs(executed, "stream"))
    assert "MLP 'mlp'" in text and "Total: 1,185 parameters" in text
    assert "pruned weights stay zero: True" in text and "restored: True" in text
    assert text.count("created probe/scale 2.0") == 2  # the re-run cell worked twice
    rich = [out.data for out in outputs(executed, "execute_result")]
    html = "".join(data.get("text/html", "") for data in rich)
    assert "MLP &#x27;mlp&#x27;" in html  # the model as a table
    assert "Variable &#x27;mlp/dense/w&#x27;" in html  # a variable's card
    assert "Optimizer &#x27;optimizer&#x27;" in html and "Store with 1 variables" in html
    assert "mask 50.0%" in html  # the pruned weight's mask
    plots = [out for out in outputs(executed, "display_data") if "image/png" in out.data]
    assert plots  # the live loss plot
