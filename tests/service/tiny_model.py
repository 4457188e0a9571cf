"""A tiny hand-built ONNX re-ID model and its model folder, for tests and benchmarks.

Graph: images [N, 3, H, W] -> AveragePool to a 4x2 grid -> flatten [N, 24]
-> fixed random linear map [24, dim] -> L2 norm = ``embedding``; plus one softmax head per
attribute (``attr_<name>`` = softmax(features @ W_a)); with ``local``, AlignedReID-like
stripe features ``local`` [N, 4, 6]: each pooled row's 3 x 2 values, L2-normalised. :func:`reference_outputs` recomputes
the same thing in numpy, independently of ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from reidcore.attributes import Attribute, AttributeSchema
from service.manifest import (
    EmbeddingSpec,
    InputSpec,
    Manifest,
    ModelFile,
    OutputSpec,
    TrainingInfo,
    sha256_file,
    utc_now,
    write_manifest,
)

GRID = (4, 2)  # pooled rows x cols
LOCAL_SHAPE = (GRID[0], 3 * GRID[1])  # stripes x channels of the ``local`` output
OPSET = 17

TINY_SCHEMA = AttributeSchema(
    (
        Attribute("gender", ("male", "female")),
        Attribute("upper_color", ("black", "white", "red", "blue"), group="up"),
    ),
    source="tests",
)


def tiny_weights(dim: int, schema: AttributeSchema, seed: int) -> dict[str, np.ndarray]:
    """The fixed random matrices of the tiny model."""
    rng = np.random.default_rng(seed)
    f = 3 * GRID[0] * GRID[1]
    w = {"W_emb": rng.standard_normal((f, dim)).astype(np.float32)}
    for a in schema:
        w[f"W_{a.name}"] = rng.standard_normal((f, a.num_classes)).astype(np.float32)
    return w


def build_tiny_onnx(
    dim: int, height: int, width: int, schema: AttributeSchema, seed: int, local: bool = False
) -> onnx.ModelProto:
    """The graph described in the module docstring."""
    kh, kw = height // GRID[0], width // GRID[1]
    f = 3 * GRID[0] * GRID[1]
    weights = tiny_weights(dim, schema, seed)
    nodes = [
        helper.make_node(
            "AveragePool", ["images"], ["pooled"], kernel_shape=[kh, kw], strides=[kh, kw]
        ),
        helper.make_node("Flatten", ["pooled"], ["feat"], axis=1),  # [N, 24]
        helper.make_node("MatMul", ["feat", "W_emb"], ["raw"]),  # [N, dim]
        helper.make_node("LpNormalization", ["raw"], ["embedding"], axis=1, p=2),
    ]
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])]
    for a in schema:
        nodes += [
            helper.make_node("MatMul", ["feat", f"W_{a.name}"], [f"logit_{a.name}"]),
            helper.make_node("Softmax", [f"logit_{a.name}"], [f"attr_{a.name}"], axis=1),
        ]
        outputs.append(
            helper.make_tensor_value_info(f"attr_{a.name}", TensorProto.FLOAT, ["N", a.num_classes])
        )
    if local:
        weights["local_shape"] = np.array([0, GRID[0], 3 * GRID[1]], dtype=np.int64)
        nodes += [
            helper.make_node("Transpose", ["pooled"], ["rows"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", ["rows", "local_shape"], ["stripes"]),
            helper.make_node("LpNormalization", ["stripes"], ["local"], axis=2, p=2),
        ]
        outputs.append(
            helper.make_tensor_value_info("local", TensorProto.FLOAT, ["N", *LOCAL_SHAPE])
        )
    graph = helper.make_graph(
        nodes,
        "tiny_reid",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, height, width])],
        outputs,
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    assert f == weights["W_emb"].shape[0]
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10  # ONNX Runtime 1.31 refuses onnx 1.23's default IR 14
    onnx.checker.check_model(model)
    return model


def reference_outputs(
    batch: np.ndarray, dim: int, schema: AttributeSchema, seed: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Numpy re-computation of the tiny model on a preprocessed batch [N, 3, H, W]."""
    n, _, h, w = batch.shape
    g = batch.reshape(n, 3, GRID[0], h // GRID[0], GRID[1], w // GRID[1]).mean(axis=(3, 5))
    feat = g.reshape(n, -1)
    weights = tiny_weights(dim, schema, seed)
    raw = feat @ weights["W_emb"]
    emb = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    attrs = {}
    for a in schema:
        z = feat @ weights[f"W_{a.name}"]
        z = np.exp(z - z.max(axis=1, keepdims=True))
        attrs[a.name] = z / z.sum(axis=1, keepdims=True)
    return emb, attrs


def reference_local(batch: np.ndarray) -> np.ndarray:
    """Numpy re-computation of the tiny model's ``local`` output [N, 4, 6]."""
    n, _, h, w = batch.shape
    g = batch.reshape(n, 3, GRID[0], h // GRID[0], GRID[1], w // GRID[1]).mean(axis=(3, 5))
    stripes = g.transpose(0, 2, 1, 3).reshape(n, *LOCAL_SHAPE)
    return stripes / np.linalg.norm(stripes, axis=2, keepdims=True)


def write_tiny_model_folder(
    folder: Path,
    dim: int = 64,
    height: int = 32,
    width: int = 16,
    schema: AttributeSchema = TINY_SCHEMA,
    seed: int = 0,
    name: str = "tiny",
    version: str = "1",
    local: bool = False,
) -> Path:
    """Write ``folder/{model.onnx, manifest.json}`` for the tiny model (with ``local``, its
    ``local`` output too); returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model = build_tiny_onnx(dim, height, width, schema, seed, local)
    onnx.save(model, str(folder / "model.onnx"))
    outputs = [OutputSpec(name="embedding", kind="embedding", shape=["N", dim])]
    outputs += [
        OutputSpec(
            name=f"attr_{a.name}", kind="attribute", shape=["N", a.num_classes], attribute=a.name
        )
        for a in schema
    ]
    if local:
        outputs.append(OutputSpec(name="local", kind="local", shape=["N", *LOCAL_SHAPE]))
    manifest = Manifest(
        name=name,
        version=version,
        created=utc_now(),
        model=ModelFile(file="model.onnx", sha256=sha256_file(folder / "model.onnx"), opset=OPSET),
        input=InputSpec(
            name="images",
            height=height,
            width=width,
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
        ),
        embedding=EmbeddingSpec(output="embedding", dim=dim, l2_normalized=True),
        outputs=outputs,
        attributes=schema.to_dict(),
        training=TrainingInfo(dataset="none (random weights)", metrics={}),
    )
    write_manifest(folder, manifest)
    return folder
