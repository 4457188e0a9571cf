"""A tiny hand-built ONNX re-ID model and its model folder, for tests and benchmarks.

Graph: images [N, 3, H, W] -> AveragePool to a 4x2 grid -> flatten [N, 24]
-> fixed random linear map [24, dim] -> L2 norm = ``embedding``; plus one softmax head per
attribute (``attr_<name>`` = softmax(features @ W_a)). :func:`reference_outputs` recomputes
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
    dim: int, height: int, width: int, schema: AttributeSchema, seed: int
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


def write_tiny_model_folder(
    folder: Path,
    dim: int = 64,
    height: int = 32,
    width: int = 16,
    schema: AttributeSchema = TINY_SCHEMA,
    seed: int = 0,
    name: str = "tiny",
    version: str = "1",
) -> Path:
    """Write ``folder/{model.onnx, manifest.json}`` for the tiny model; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(build_tiny_onnx(dim, height, width, schema, seed), str(folder / "model.onnx"))
    outputs = [OutputSpec(name="embedding", kind="embedding", shape=["N", dim])]
    outputs += [
        OutputSpec(
            name=f"attr_{a.name}", kind="attribute", shape=["N", a.num_classes], attribute=a.name
        )
        for a in schema
    ]
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
