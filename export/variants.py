"""Faster ONNX files of the same model, each kept only if its retrieval mAP holds.

============  ===============================================================================
variant       what
============  ===============================================================================
optimized     ORT graph optimisation saved to disk (``optimized_model_filepath``) at level
              EXTENDED: fusions only. Level ALL adds CPU layout transforms (NCHWc) tied to the
              exporting machine's instruction set, which ORT re-applies cheaply at load anyway.
fp16          float16 weights and activations for the CUDA execution provider
              (``onnxruntime.transformers.float16``, no new dependency), float32 inputs and
              outputs (``keep_io_types``) so the service feeds it as the manifest says. The L2
              normalisation and softmax stay float32 (a sum of 2048 squares overflows fp16).
int8          static QDQ quantisation for the CPU, uint8 activations and per-channel int8
              weights (U8S8: on this AVX-512 VNNI host 2.6x faster than S8S8 for ResNet-50;
              hosts without VNNI may saturate, which the mAP rule below catches):
              ``quant_pre_process`` then ``quantize_static`` on real images that are not
              in the validation split, as :class:`Int8Config` says. Default
              (:data:`DEFAULT_INT8`): Entropy calibration on 256 images, every node int8
              but the L2 norm/softmax tail: on OSNet x0.25 / CUHK03 it stayed within 0.5
              points (MinMax lost 0.67-0.97) with the best fidelity of the passing settings
              (per-tensor weights and MinMax moving average passed with worse cosines). The
              drop's standard error over 200 queries is ~0.45 points, as large as the rule:
              settings within ~0.5 of each other are not told apart by it (RESULTS.md).
============  ===============================================================================

Acceptance rule (:func:`accept`): a variant's mAP on the validation split may fall at most
``max_drop_points`` (0.5) percentage points below the fp32 model's; otherwise its file is
deleted and the reason logged. The mAP is measured with ONNX Runtime's CPU provider, the only
one here: for fp16 this validates the numerics (fp16 on CPU runs the same arithmetic) but not
its speed, and the variant's description says on which provider it was measured.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader

from export.validation import ValidationSet, embed, open_session, retrieval_metrics
from export.verify import row_cosine

logger = logging.getLogger(__name__)

VARIANTS = ("optimized", "fp16", "int8")
"""Valid variant names, in the order they are built."""
MAX_MAP_DROP_POINTS = 0.5
"""Largest accepted fall of mAP, in percentage points, relative to fp32."""
FLOAT_ONLY_OPS = ("ReduceL2", "Div", "Clip", "Expand", "Softmax")
"""Ops of the L2 normalisation and the attribute softmax: kept float32 in fp16 and int8."""


def variant_file(name: str) -> str:
    """File name of variant ``name`` in the model folder, e.g. ``model.int8.onnx``."""
    return f"model.{name}.onnx"


def parse_variants(text: str | Sequence[str]) -> list[str]:
    """``"optimized,int8"`` -> ``["optimized", "int8"]``; unknown names raise naming the valid."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip() for n in items if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; valid: {list(VARIANTS)}")
    return [v for v in VARIANTS if v in names]


@dataclass
class VariantOutcome:
    """What happened to one variant."""

    name: str
    """Variant name (``optimized``, ``fp16``, ``int8``)."""
    path: Path
    """Where its file was written (deleted again when not kept)."""
    description: str
    """What differs from the fp32 model and where it was validated."""
    kept: bool
    """Whether it passed the mAP rule and stays in the folder."""
    reason: str = ""
    """Why it was refused (empty when kept)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """mAP, rank-1, drop in points vs fp32 and mean/min cosine to the fp32 embeddings."""


# --------------------------------------------------------------------------- builders


def build_optimized(src: Path, dst: Path) -> str:
    """Save ORT's EXTENDED-level optimised graph of ``src`` to ``dst``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), sess_options=so, providers=["CPUExecutionProvider"])
    return "ONNX Runtime graph optimisation (EXTENDED, CPU EP) saved to disk"


def build_fp16(src: Path, dst: Path) -> str:
    """float16 copy of ``src`` with float32 inputs/outputs and float32 normalisation/softmax."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    blocked = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FLOAT_ONLY_OPS))
    fp16 = convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
    drop_duplicate_nodes(fp16.graph)
    sort_nodes(fp16.graph)
    onnx.checker.check_model(fp16)
    onnx.save(fp16, str(dst))
    return "float16 (for the CUDA EP), float32 inputs/outputs"


def drop_duplicate_nodes(graph: onnx.GraphProto) -> None:
    """Remove repeated identical nodes in place. The fp16 converter inserts one float32 Cast
    per blocked consumer of a tensor, all with the same name and output, which breaks SSA."""
    produced: dict[str, onnx.NodeProto] = {}
    keep: list[onnx.NodeProto] = []
    for node in graph.node:
        first = next((produced[o] for o in node.output if o in produced), None)
        if first is None:
            produced.update({o: node for o in node.output})
            keep.append(node)
        elif first.SerializeToString() != node.SerializeToString():
            raise ValueError(f"two different nodes write tensor {node.output[0]!r}")
    del graph.node[:]
    graph.node.extend(keep)


def sort_nodes(graph: onnx.GraphProto) -> None:
    """Order ``graph.node`` topologically in place (the fp16 converter appends its input casts
    at the end, which ONNX's checker refuses); ValueError if a node's input is never produced."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        runnable = [n for n in pending if all(i in ready for i in n.input)]
        if not runnable:
            raise ValueError(f"graph has nodes with unproduced inputs: {pending[0].name}")
        for n in runnable:
            ready.update(n.output)
        ordered += runnable
        pending = [n for n in pending if all(n is not r for r in runnable)]
    del graph.node[:]
    graph.node.extend(ordered)


CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
"""Valid values of :attr:`Int8Config.calibration`."""
FLOAT_GROUPS = ("first_conv", "last_conv", "neck")
"""Valid entries of :attr:`Int8Config.keep_float`."""


@dataclass(frozen=True)
class Int8Config:
    """How the int8 variant is quantised. The defaults are the setting chosen on torchreid's
    OSNet x0.25 (MSMT17) against a CUHK03-NP validation split (``benchmarks/RESULTS.md``,
    section ``inference``)."""

    calibration: str = "entropy"
    """Activation range estimator: ``minmax``, ``percentile`` or ``entropy``."""
    percentile: float = 99.999
    """Percentile of the activation histogram kept by ``percentile`` calibration."""
    moving_average: bool = False
    """``minmax``: average the per-chunk minima/maxima instead of taking the extremes."""
    per_channel: bool = True
    """One weight scale per output channel (per-tensor loses about 1.7 mAP points on OSNet)."""
    reduce_range: bool = False
    """7-bit weights, for hosts without VNNI where U8S8 products can saturate."""
    keep_float: tuple[str, ...] = ()
    """Node groups left float32 besides :data:`FLOAT_ONLY_OPS`: ``first_conv`` (the stem
    conv, so the normalised input image is never rounded to 8 bits), ``last_conv``, ``neck``
    (pooling + embedding Gemm/BatchNorm)."""
    chunk: int = 16
    """Images per calibration forward pass."""
    histogram_stride: int = 64
    """Images per histogram pass of ``percentile``/``entropy`` (bounds memory: those
    calibrators keep every intermediate tensor of a pass)."""

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATION_METHODS:
            raise ValueError(
                f"unknown int8 calibration {self.calibration!r}; valid: {list(CALIBRATION_METHODS)}"
            )
        unknown = [g for g in self.keep_float if g not in FLOAT_GROUPS]
        if unknown:
            raise ValueError(f"unknown keep_float groups {unknown}; valid: {list(FLOAT_GROUPS)}")

    def describe(self, images: int) -> str:
        """One line for the manifest, e.g. ``minmax-calibrated on 256 images, ...``."""
        how = self.calibration + (f" {self.percentile}" if self.calibration == "percentile" else "")
        how += " (moving average)" if self.moving_average and self.calibration == "minmax" else ""
        parts = [
            "uint8 activations",
            f"{'per-channel' if self.per_channel else 'per-tensor'} int8 weights"
            + (" (7-bit range)" if self.reduce_range else ""),
        ]
        if self.keep_float:
            parts.append(f"float32 {', '.join(self.keep_float)}")
        return f"int8 static QDQ ({'; '.join(parts)}), {how}-calibrated on {images} images"


DEFAULT_INT8 = Int8Config()
"""What ``make_variant("int8", ...)`` and ``reid export --variants int8`` use."""
DEFAULT_CALIBRATION_COUNT = 256
"""Calibration images ``reid export`` gives the int8 variant."""


class _BatchReader(CalibrationDataReader):
    """A ``CalibrationDataReader`` over a preprocessed float32 batch, ``chunk`` images a time.

    ``set_range`` and ``len`` let ``quantize_static`` calibrate in strides
    (``CalibStridedMinMax``), which the histogram calibrators need to bound their memory.
    """

    def __init__(self, input_name: str, images: np.ndarray, chunk: int = 8) -> None:
        self._name = input_name
        self._images = images
        self._chunk = chunk
        self._end = len(images)
        self._it: Iterator[int] = iter(range(0, len(images), chunk))

    def __len__(self) -> int:
        return len(self._images)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Serve images ``start_index:end_index`` from now on."""
        self._end = min(end_index, len(self._images))
        self._it = iter(range(start_index, self._end, self._chunk))

    def get_next(self) -> dict[str, np.ndarray] | None:
        start = next(self._it, None)
        if start is None:
            return None
        stop = min(start + self._chunk, self._end)
        return {self._name: np.ascontiguousarray(self._images[start:stop])}

    def rewind(self) -> None:
        self.set_range(0, len(self._images))


def float_nodes(graph: onnx.GraphProto, keep_float: Sequence[str]) -> list[str]:
    """Names of the nodes that stay float32: :data:`FLOAT_ONLY_OPS` plus ``keep_float`` groups."""
    nodes = list(graph.node)
    convs = [n for n in nodes if n.op_type == "Conv"]
    names = [n.name for n in nodes if n.op_type in FLOAT_ONLY_OPS]
    for group in keep_float:
        match group:
            case "first_conv":
                names += [convs[0].name] if convs else []
            case "last_conv":
                names += [convs[-1].name] if convs else []
            case "neck":
                neck_ops = ("GlobalAveragePool", "ReduceMean", "Gemm", "BatchNormalization")
                tail = nodes[nodes.index(convs[-1]) + 1 :] if convs else nodes
                names += [n.name for n in tail if n.op_type in neck_ops]
            case _:
                raise ValueError(f"unknown keep_float group {group!r}; valid: {list(FLOAT_GROUPS)}")
    return sorted(set(names))


def _strided_calibration(cfg: Int8Config, images: int) -> int | None:
    """``CalibStridedMinMax`` for ``quantize_static``: a divisor of ``images`` near the
    configured stride for histogram methods, ``None`` (one pass) for ``minmax``."""
    if cfg.calibration == "minmax" or images <= cfg.histogram_stride:
        return None
    return max(d for d in range(1, cfg.histogram_stride + 1) if images % d == 0)


def build_int8(
    src: Path, dst: Path, calibration: np.ndarray, cfg: Int8Config = DEFAULT_INT8
) -> str:
    """Static QDQ int8 of ``src`` (U8S8), calibrated on ``calibration`` images as ``cfg`` says."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ValueError("int8 calibration needs at least one image")
    method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[cfg.calibration]
    extra: dict[str, object] = {"CalibMovingAverage": cfg.moving_average}
    if cfg.calibration == "percentile":
        extra["CalibPercentile"] = cfg.percentile
    stride = _strided_calibration(cfg, len(calibration))
    if stride:
        extra["CalibStridedMinMax"] = stride
    chunk = cfg.chunk
    if cfg.calibration != "minmax":  # histogram calibrators stack chunks: all the same size
        per_pass = stride or len(calibration)
        chunk = max(d for d in range(1, cfg.chunk + 1) if per_pass % d == 0)
    printed = io.StringIO()  # the calibrators print progress: DEBUG log, not the user's stdout
    with (
        tempfile.TemporaryDirectory(dir=dst.parent, prefix=".int8-") as tmp,
        contextlib.redirect_stdout(printed),
    ):
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre))
        model = onnx.load(str(pre))
        reader = _BatchReader(model.graph.input[0].name, calibration, chunk)
        quantize_static(
            str(pre),
            str(dst),
            calibration_data_reader=reader,
            quant_format=QuantFormat.QDQ,
            per_channel=cfg.per_channel,
            reduce_range=cfg.reduce_range,
            activation_type=QuantType.QUInt8,  # U8S8: 2.6x faster than S8S8 here (VNNI)
            weight_type=QuantType.QInt8,
            nodes_to_exclude=float_nodes(model.graph, cfg.keep_float),
            calibrate_method=method,
            extra_options=extra,
        )
    for line in printed.getvalue().splitlines():
        logger.debug("onnxruntime calibration: %s", line)
    return cfg.describe(len(calibration))


def build_variant(
    name: str, src: Path, dst: Path, calibration: np.ndarray, int8: Int8Config = DEFAULT_INT8
) -> str:
    """Write variant ``name`` of ``src`` to ``dst``; returns its description."""
    match name:
        case "optimized":
            return build_optimized(src, dst)
        case "fp16":
            return build_fp16(src, dst)
        case "int8":
            return build_int8(src, dst, calibration, int8)
        case _:
            raise ValueError(f"unknown variant {name!r}; valid: {list(VARIANTS)}")


# --------------------------------------------------------------------------- acceptance


@dataclass
class Measured:
    """Embeddings and mAP of one ONNX file on the validation split."""

    query: np.ndarray
    """[Nq, dim] L2-normalised query embeddings."""
    gallery: np.ndarray
    """[Ng, dim] L2-normalised gallery embeddings."""
    mAP: float
    """Official mAP, fraction in [0, 1]."""
    rank1: float
    """CMC rank-1, fraction in [0, 1]."""
    provider: str = "CPUExecutionProvider"
    """Execution provider the session actually ran on."""


def measure(path: Path, vs: ValidationSet) -> Measured:
    """Run ``path`` (CPU) on the validation split: embeddings, mAP and rank-1."""
    session = open_session(path)
    q, g = embed(session, vs.query), embed(session, vs.gallery)
    result = retrieval_metrics(vs, q, g)
    return Measured(q, g, result.mAP, result.rank(1), session.get_providers()[0])


def accept(
    variant_map: float, fp32_map: float, max_drop_points: float = MAX_MAP_DROP_POINTS
) -> tuple[bool, float]:
    """``(kept, drop)``: drop = (fp32 - variant) mAP in points; kept iff drop <= the limit."""
    drop = 100.0 * (fp32_map - variant_map)
    if not np.isfinite(drop):
        return False, float("nan")
    return drop <= max_drop_points + 1e-9, drop


def variant_metrics(m: Measured, base: Measured, drop: float) -> dict[str, float]:
    """The numbers recorded in the manifest for a variant."""
    cos = np.concatenate([row_cosine(m.query, base.query), row_cosine(m.gallery, base.gallery)])
    return {
        "mAP": m.mAP,
        "rank1": m.rank1,
        "mAP_fp32": base.mAP,
        "mAP_drop_points": drop,
        "cosine_to_fp32_mean": float(cos.mean()),
        "cosine_to_fp32_min": float(cos.min()),
    }


def make_variant(
    name: str,
    src: Path,
    folder: Path,
    vs: ValidationSet,
    base: Measured,
    calibration: np.ndarray,
    max_drop_points: float = MAX_MAP_DROP_POINTS,
    int8: Int8Config = DEFAULT_INT8,
) -> VariantOutcome:
    """Build variant ``name`` next to ``src`` in ``folder``, measure it, keep or delete it.

    ``calibration`` (int8 only) must not hold validation images; ``int8`` says how int8 is
    quantised (default: :data:`DEFAULT_INT8`).
    """
    dst = folder / variant_file(name)
    description = build_variant(name, src, dst, calibration, int8)
    m = measure(dst, vs)
    kept, drop = accept(m.mAP, base.mAP, max_drop_points)
    description += f"; mAP measured on {m.provider} over {vs.name}"
    outcome = VariantOutcome(name, dst, description, kept, metrics=variant_metrics(m, base, drop))
    if kept:
        logger.info("variant %s kept: mAP %.2f vs fp32 %.2f", name, 100 * m.mAP, 100 * base.mAP)
    else:
        outcome.reason = (
            f"mAP {100 * m.mAP:.2f} is {drop:.2f} points below fp32's {100 * base.mAP:.2f} "
            f"(limit {max_drop_points})"
        )
        logger.warning("variant %s not written: %s", name, outcome.reason)
        dst.unlink(missing_ok=True)
    return outcome
