"""Export: ONNX (standard operators, ONNX Runtime) and pt2 (the compiled op kept) compute the eager model's outputs;
the release weights load back exactly; what cannot be exported is refused. The ONNX and pt2 files are written by
`rotated-ddetr export` (`export_model` underneath): one export each covers the command and the library."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from rotated_ddetr.checkpoint import load_model, load_weights
from rotated_ddetr.cli.main import main as cli_main
from rotated_ddetr.export import ExportError, RawDetector, export_model
from rotated_ddetr.inference import postprocess_raw
from rotated_ddetr.model import reference_ops
from rotated_ddetr.ops import extension_loaded
from tests.export.conftest import EXPORT_SIZE

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return load_model(tiny_checkpoint)


@pytest.fixture(scope="module")
def eager_outputs(tiny, tile_batch):
    """The eager model's outputs on the three tiles, with the compiled op where it is built."""
    with torch.no_grad():
        return RawDetector(tiny[0])(tile_batch)


def _export_command(checkpoint, fmt: str, out) -> None:
    """`rotated-ddetr export CHECKPOINT --format FMT --out OUT --image-size 256 256`, which must succeed."""
    size = [str(side) for side in EXPORT_SIZE]
    assert cli_main(["export", str(checkpoint), "--format", fmt, "--out", str(out), "--image-size", *size]) == 0


@pytest.fixture(scope="module")
def onnx_file(tiny_checkpoint, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    _export_command(tiny_checkpoint, "onnx", path)
    return path


def test_reference_ops_switch_runs_the_twin_and_restores(tiny, tile_batch, eager_outputs):
    model = tiny[0]
    with reference_ops(model), torch.no_grad():
        assert all(m.reference_ops for m in model.modules() if hasattr(m, "reference_ops"))
        logits, rboxes = RawDetector(model)(tile_batch)
    assert not any(getattr(m, "reference_ops", False) for m in model.modules())
    torch.testing.assert_close(logits, eager_outputs[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(rboxes, eager_outputs[1], atol=1e-5, rtol=0)


def test_onnx_graph_has_standard_operators_and_a_dynamic_batch(onnx_file):
    proto = onnx.load(onnx_file)
    onnx.checker.check_model(proto, full_check=True)
    assert [entry.version for entry in proto.opset_import if entry.domain == ""] == [18]
    assert {node.domain for node in proto.graph.node} <= {""}  # no custom op domain
    assert "GridSample" in {node.op_type for node in proto.graph.node}
    (images,) = proto.graph.input
    dims = images.type.tensor_type.shape.dim
    assert images.name == "images" and dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, *EXPORT_SIZE]
    assert [output.name for output in proto.graph.output] == ["logits", "rboxes"]


def test_onnx_runtime_equals_eager_within_1e4(onnx_file, tile_batch, eager_outputs, tiny):
    """A batch of 3 (the export traced 2) of real synthetic tiles; then the same detections after post-processing."""
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    logits, rboxes = session.run(None, {"images": tile_batch.numpy()})
    np.testing.assert_allclose(logits, eager_outputs[0].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(rboxes, eager_outputs[1].numpy(), atol=1e-4, rtol=0)
    one = session.run(None, {"images": tile_batch[:1].numpy()})[0]
    np.testing.assert_allclose(one, eager_outputs[0][:1].numpy(), atol=1e-4, rtol=0)
    sizes = torch.tensor([EXPORT_SIZE] * 3)
    exported = postprocess_raw(logits, rboxes, sizes, top_k=50)
    eager = postprocess_raw(*eager_outputs, sizes, top_k=50)
    for a, b in zip(exported, eager, strict=True):
        torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.rboxes, b.rboxes, atol=1e-2, rtol=0)  # pixels of a 256-px tile
        assert torch.equal(a.labels, b.labels)


@pytest.mark.skipif(not extension_loaded(), reason="the compiled extension is not built")
def test_pt2_keeps_the_compiled_op_and_equals_eager_within_1e5(tiny_checkpoint, tile_batch, eager_outputs, tmp_path):
    path = tmp_path / "tiny.pt2"
    _export_command(tiny_checkpoint, "pt2", path)
    program = torch.export.load(path)
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "rotated_ddetr.ms_deform_attn.default" in targets
    with torch.no_grad():
        logits, rboxes = program.module()(tile_batch)
    torch.testing.assert_close(logits, eager_outputs[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(rboxes, eager_outputs[1], atol=1e-5, rtol=0)


def test_safetensors_pair_holds_the_weights_config_and_classes(tiny, tiny_checkpoint, tmp_path):
    model, cfg, classes = tiny
    path = export_model(model, cfg, classes, "safetensors", tmp_path / "tiny.safetensors")
    header_length = int.from_bytes(path.read_bytes()[:8], "little")  # safetensors: length + JSON header, no pickle
    assert path.read_bytes()[8:9] == b"{" and header_length > 0
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["classes"] == list(classes) and meta["config"] == cfg.to_dict()
    weights, config, loaded_classes = load_weights(path)
    expected = torch.load(tiny_checkpoint, weights_only=True)["model"]
    assert weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in expected)
    assert config == cfg.to_dict() and loaded_classes == classes


def test_refuses_what_cannot_be_exported(tiny, tmp_path):
    model, cfg, classes = tiny
    with pytest.raises(ExportError, match="--format must be one of onnx, pt2, safetensors"):
        export_model(model, cfg, classes, "tflite", tmp_path / "x")
    with pytest.raises(ExportError, match="--image-size must be two multiples of 64"):
        export_model(model, cfg, classes, "onnx", tmp_path / "x.onnx", image_size=(250, 256))
    with pytest.raises(ExportError, match="--opset must be >= 18"):
        export_model(model, cfg, classes, "onnx", tmp_path / "x.onnx", image_size=EXPORT_SIZE, opset=16)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, proposal_nms_iou=0.5))
    with pytest.raises(ExportError, match="proposal_nms_iou = 0.5"):
        export_model(model, cfg, classes, "pt2", tmp_path / "x.pt2", image_size=EXPORT_SIZE)
    assert not list(tmp_path.iterdir())  # nothing written
