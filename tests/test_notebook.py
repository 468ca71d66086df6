"""examples/quickstart.ipynb runs top to bottom (nbclient, the current interpreter's ipykernel)."""

import pytest

from ocr_mllm.inference._testing import REPO_ROOT, SUBPROCESS_ENV, single_thread


NOTEBOOK = REPO_ROOT / "examples" / "quickstart.ipynb"


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    with single_thread():
        yield


def test_quickstart_notebook_runs(tiny_model_dir, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv(
        "OCR_MLLM_MODEL_DIR", str(tiny_model_dir)
    )  # reuse the session's tiny model (the kernel inherits env)
    for key, value in SUBPROCESS_ENV.items():  # single-threaded kernel, no progress bars
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()
    outputs = "\n".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    assert "model folder:" in outputs and "chunks" in outputs and "loss " in outputs
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors
