"""The one interface spec: the committed repository is generated from it, the client can import it alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dnsvr.client import spec
from dnsvr.export.repository import bundled_layout, repository_files, stale_files

REPO = Path(__file__).resolve().parents[1]
TEXT_FILES = ("*.pbtxt", "model.py")


def test_committed_repository_is_the_bundled_exports_text() -> None:
    """model_repository/ holds exactly the configs and adapters `dnsvr export --weights bundled` writes."""
    committed = REPO / "model_repository"
    networks, text = bundled_layout("bin")
    assert stale_files(committed, networks, "bin", text) == [], \
        "run `dnsvr export --write-configs --out model_repository` and commit"
    on_disk = {p.relative_to(committed).as_posix() for pattern in TEXT_FILES for p in committed.rglob(pattern)}
    assert on_disk == set(repository_files(networks, "bin", text))


def test_spec_types_and_lookup() -> None:
    tensor = spec.FINE_INDEX_BIN.output("indexed")
    assert (tensor.triton_dtype, tensor.config_data_type, tensor.dims) == ("UINT8", "TYPE_UINT8", (-1, -1, 9, 64))
    assert spec.model("coarse_embed") is spec.COARSE_EMBED
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        spec.model("nope")
    with pytest.raises(KeyError, match="has no tensor 'x'"):
        spec.COARSE_EMBED.input("x")
    with pytest.raises(ValueError, match="dtype 'complex64'"):
        spec.TensorSpec("x", "complex64", (1,))
    assert set(spec.FINE_KINDS) == {"bin", "att"}


def test_client_spec_imports_without_torch_or_onnx() -> None:
    code = "import sys, dnsvr.client.spec; bad = {'torch', 'onnx', 'onnxruntime'} & set(sys.modules); print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "set()"


def test_docs_tensor_table_is_generated_from_the_spec() -> None:
    from dnsvr.export.repository import tensor_table

    doc = (REPO / "docs" / "export.md").read_text()
    section = doc.split("<!-- tensors:start -->\n", 1)[1].split("\n<!-- tensors:end -->", 1)[0]
    assert section == tensor_table(), "regenerate the table in docs/export.md from dnsvr.export.repository"
