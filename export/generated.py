"""Generated pedestrian crops for the export parity check when no real images are given.

``reid export --checkpoint CKPT --out DIR`` must work as written: without
``--calibration-images`` or ``--validation`` the PyTorch/ONNX Runtime parity check runs on
crops drawn by the synthetic dataset's renderer (:mod:`training.data.synthetic_render`:
people of varied clothing colours and poses on camera backgrounds, each camera with its own
colour rendition), seeded, so every export sees the same images. Parity compares two
runtimes on the same inputs and fits nothing: structured, colourful images check the graph
and the manifest's preprocessing (channel order, mean/std, scaling) as real ones would.
int8 calibration, which fits activation ranges, never uses them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from training.data.synthetic_identity import sample_identity
from training.data.synthetic_render import make_cameras, render_crop

CAMERAS = 4
"""Cameras the crops are spread over (each renders colours its own way)."""


def generated_images(count: int, seed: int = 0) -> list[Image.Image]:
    """``count`` seeded 256x128 RGB pedestrian crops, one identity each, cameras in turn."""
    rng = np.random.default_rng(seed)
    cameras = make_cameras(CAMERAS, rng)
    return [
        Image.fromarray(render_crop(sample_identity(rng, i + 1), cameras[i % CAMERAS], rng).image)
        for i in range(count)
    ]
