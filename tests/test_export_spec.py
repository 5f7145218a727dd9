"""The one interface spec: committed Triton configs are generated from it, the client can import it alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dnsvr.client import spec
from dnsvr.export.repository import model_configs, stale_configs
from dnsvr.export.triton_config import read_config

REPO = Path(__file__).resolve().parents[1]


def test_committed_configs_equal_the_generated_ones() -> None:
    stale = stale_configs(REPO / "model_repository")
    assert not stale, f"run `dnsvr export --write-configs` and commit: {stale}"


@pytest.mark.parametrize("name", list(spec.NETWORKS))
def test_configs_carry_the_spec(name) -> None:
    model = spec.NETWORKS[name]
    for relative in model_configs(model):
        on_disk = read_config(REPO / "model_repository" / name / relative)
        assert on_disk.name == name
        assert on_disk.max_batch_size == model.max_batch_size
        strip = 1 if model.max_batch_size else 0
        assert [(t.name, t.dtype, t.dims) for t in on_disk.inputs] == [
            (t.name, t.numpy_dtype, t.dims[strip:]) for t in model.inputs]
        assert [t.name for t in on_disk.outputs] == list(model.output_names)
    production = model_configs(model)["config.pbtxt"]
    assert production.platform == "onnxruntime_onnx"
    assert production.instance_groups[0].kind == "KIND_GPU"
    assert model_configs(model)["configs/tensorrt.pbtxt"].platform == "tensorrt_plan"
    assert model_configs(model)["configs/cpu_local.pbtxt"].backend == "python"


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
