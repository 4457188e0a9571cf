"""`reid export`: checkpoint -> ONNX model folder (model.onnx + manifest.json), parity-checked.

Examples::

    reid export --checkpoint runs/apr/best.pt --out models/apr/1
    reid export --checkpoint runs/apr/best.pt --out models/apr/2 --flip \\
        --calibration-images crops/ --validation data/market --variants optimized,int8

The manifest is written only if ONNX Runtime, loaded through the service's runtime and
preprocessing, matches PyTorch (cosine >= 0.9999) on real images (``--calibration-images``,
else the validation split) or, when neither is given, on generated pedestrian crops (said in
the log and the manifest). Variants need ``--validation`` (each is kept only if its mAP on
the validation split stays within 0.5 points of fp32); int8 also needs real calibration
images, which ``--calibration-images`` or the validation folder's training images give.
ONNX Runtime's INFO chatter (the int8 quantiser's hundreds of lines) is lowered to DEBUG by
the CLI's logging set-up (:mod:`reidcore.logs`); ``reid --log-level DEBUG export ...`` shows it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Export a checkpoint to an ONNX model folder (model.onnx + manifest.json)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, type=Path, help="checkpoint or torchreid OSNet .pth"
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="model folder, e.g. models/NAME/VERSION"
    )
    parser.add_argument("--name", default="", help="model name (default: parent folder of --out)")
    parser.add_argument("--version", default="", help="model version (default: last part of --out)")
    parser.add_argument(
        "--calibration-images",
        type=Path,
        help="folder of real images for parity and int8 (default: parity on generated crops)",
    )
    parser.add_argument(
        "--validation",
        type=Path,
        help="Market-style folder (query/ + bounding_box_test/, or bounding_box_train/ to carve)",
    )
    parser.add_argument(
        "--validation-ids", type=int, default=100, help="identities held out (default 100)"
    )
    parser.add_argument("--variants", default="", help="comma list of optimized, fp16, int8")
    parser.add_argument(
        "--calibration-count",
        type=int,
        help="int8 calibration images, never validation ones (default 256)",
    )
    parser.add_argument(
        "--include-local", action="store_true", help="also export the local stripes"
    )
    parser.add_argument(
        "--flip",
        action="store_true",
        help="test-time flip in the graph: outputs averaged with the mirror image's (2x compute)",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17, default 17)")
    parser.add_argument("--exporter", default="legacy", help="legacy (default) or dynamo")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model folder")


def run(args: argparse.Namespace) -> int:
    from export.checkpoint import CheckpointError
    from export.onnx_export import OnnxExportConfig
    from export.pipeline import ExportError, ExportOptions, export_model_folder
    from export.variants import DEFAULT_CALIBRATION_COUNT, parse_variants
    from reidcore.cli import CommandError

    try:
        opts = ExportOptions(
            checkpoint=args.checkpoint,
            out=args.out,
            name=args.name,
            version=args.version,
            calibration_images=args.calibration_images,
            validation=args.validation,
            validation_ids=args.validation_ids,
            variants=tuple(parse_variants(args.variants)),
            calibration_count=args.calibration_count or DEFAULT_CALIBRATION_COUNT,
            include_local=args.include_local,
            flip=args.flip,
            onnx=OnnxExportConfig(opset=args.opset, exporter=args.exporter),
            overwrite=args.overwrite,
        )
        result = export_model_folder(opts)
    except (CheckpointError, ExportError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    print(f"{result.parity.summary()}\n(parity images: {result.parity_source})")
    for v in result.variants:
        status = "kept" if v.kept else f"not written: {v.reason}"
        print(f"variant {v.name}: {status}")
    print(f"wrote {result.folder} (model sha256 {result.manifest.model.sha256[:12]}...)")
    return 0
