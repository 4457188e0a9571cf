"""Image transforms for training (augmentation) and evaluation, PIL image -> float32 tensor.

Evaluation uses the shared serving path, :func:`reidcore.preprocess.to_array`, wrapped into
a tensor: training-time evaluation and the service cannot drift apart.

Training: resize to H×W -> random horizontal flip -> pad and random crop back to H×W
(a random shift with black fill, as ``Pad(10)`` + ``RandomCrop`` do) -> the same
``to_array`` normalisation -> random erasing (Zhong et al., "Random Erasing Data
Augmentation", AAAI 2020). Resize, flip and crop run on the PIL image, where they are
cheap; ``to_array`` then finds the image already at H×W and only normalises it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from reidcore.preprocess import INTERPOLATIONS, PreprocessConfig, to_array

logger = logging.getLogger(__name__)

ERASE_FILLS = ("random", "mean")


@dataclass(frozen=True)
class TrainTransformConfig:
    """Training augmentation; size, normalisation and resize filter come from ``preprocess``."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    """Input size, mean/std, interpolation and channel order: the ones the model is served with."""
    flip_p: float = 0.5
    """Probability of a horizontal flip."""
    pad: int = 10
    """Pixels of black padding on each side before the random H×W crop (0 disables it)."""
    erase_p: float = 0.5
    """Probability of random erasing."""
    erase_area: tuple[float, float] = (0.02, 0.4)
    """Range of the erased area as a fraction of the image area."""
    erase_aspect: tuple[float, float] = (0.3, 3.33)
    """Range of the erased rectangle's height/width ratio (sampled log-uniformly)."""
    erase_fill: str = "random"
    """``random``: uniform random pixel values (the paper); ``mean``: the mean pixel (zeros)."""

    def __post_init__(self) -> None:
        for name in ("flip_p", "erase_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.pad < 0:
            raise ValueError(f"pad must be >= 0, got {self.pad}")
        lo, hi = self.erase_area
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"erase_area must satisfy 0 < lo <= hi < 1, got {self.erase_area}")
        lo, hi = self.erase_aspect
        if not 0.0 < lo <= hi:
            raise ValueError(f"erase_aspect must satisfy 0 < lo <= hi, got {self.erase_aspect}")
        if self.erase_fill not in ERASE_FILLS:
            raise ValueError(f"unknown erase_fill {self.erase_fill!r}; valid: {list(ERASE_FILLS)}")


def hflip(img: Image.Image) -> Image.Image:
    """Mirror left-right."""
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def shift_crop(img: Image.Image, dx: int, dy: int) -> Image.Image:
    """Shift the image by ``(dx, dy)`` pixels with black fill, keeping its size.

    Equals padding by ``pad`` and cropping at ``(pad - dx, pad - dy)``.
    """
    if dx == 0 and dy == 0:
        return img
    out = Image.new(img.mode, img.size)
    out.paste(img, (dx, dy))
    return out


def erase_box(
    height: int,
    width: int,
    area: tuple[float, float],
    aspect: tuple[float, float],
    rng: np.random.Generator,
    attempts: int = 100,
) -> tuple[int, int, int, int] | None:
    """A random rectangle ``(top, left, h, w)`` inside ``height × width``, or None.

    Area fraction uniform in ``area``, aspect h/w log-uniform in ``aspect``; rectangles
    that do not fit are redrawn up to ``attempts`` times, as in the paper.
    """
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    for _ in range(attempts):
        target = rng.uniform(area[0], area[1]) * height * width
        ratio = math.exp(rng.uniform(log_lo, log_hi))
        h = int(round(math.sqrt(target * ratio)))
        w = int(round(math.sqrt(target / ratio)))
        if 0 < h < height and 0 < w < width:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    return None


def random_erase(x: np.ndarray, cfg: TrainTransformConfig, rng: np.random.Generator) -> np.ndarray:
    """Erase one random rectangle of a normalised float32 ``[3, H, W]`` array (in place), maybe.

    numpy rather than torch on purpose: torch's multi-threaded copy stalls for tens of
    milliseconds when the cores are busy with other work (measured on the 2-core machine).
    """
    if cfg.erase_p == 0.0 or rng.random() >= cfg.erase_p:
        return x
    _, height, width = x.shape
    box = erase_box(height, width, cfg.erase_area, cfg.erase_aspect, rng)
    if box is None:
        return x
    top, left, h, w = box
    if cfg.erase_fill == "mean":
        x[:, top : top + h, left : left + w] = 0.0
        return x
    mean = np.asarray(cfg.preprocess.mean, dtype=np.float32)[:, None, None]
    inv_std = np.float32(1.0) / np.asarray(cfg.preprocess.std, dtype=np.float32)[:, None, None]
    pixels = rng.random((3, h, w), dtype=np.float32)  # uniform pixel values in [0, 1)
    x[:, top : top + h, left : left + w] = (pixels - mean) * inv_std
    return x


class EvalTransform:
    """PIL image -> ``[3, H, W]`` float32 tensor through :func:`reidcore.preprocess.to_array`."""

    def __init__(self, preprocess: PreprocessConfig) -> None:
        self.preprocess = preprocess

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(to_array(img, self.preprocess))


class TrainTransform:
    """PIL image -> augmented ``[3, H, W]`` float32 tensor; see the module doc.

    Randomness comes from one numpy ``Generator``: seeded by ``seed`` here and reseeded per
    ``DataLoader`` worker by :meth:`reseed` (otherwise every worker would repeat the same
    augmentations). A torch ``Generator`` given as ``seed`` seeds it from that generator.
    """

    def __init__(self, cfg: TrainTransformConfig, seed: int | torch.Generator = 0) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(0)
        self.reseed(seed)

    def reseed(self, seed: int | torch.Generator) -> None:
        """Restart the random stream from ``seed`` (an int or a torch ``Generator``)."""
        if isinstance(seed, torch.Generator):
            seed = int(torch.randint(0, 2**62, (1,), generator=seed).item())
        self.rng = np.random.default_rng(seed)

    def geometry(self, img: Image.Image) -> Image.Image:
        """Resize, random flip and random shift-crop, on the PIL image."""
        pre = self.cfg.preprocess
        if img.mode != "RGB":
            img = img.convert("RGB")
        if img.size != (pre.width, pre.height):
            img = img.resize((pre.width, pre.height), INTERPOLATIONS[pre.interpolation])
        if self.cfg.flip_p > 0.0 and self.rng.random() < self.cfg.flip_p:
            img = hflip(img)
        if self.cfg.pad > 0:
            dx, dy = self.rng.integers(-self.cfg.pad, self.cfg.pad + 1, size=2)
            img = shift_crop(img, int(dx), int(dy))
        return img

    def __call__(self, img: Image.Image) -> torch.Tensor:
        x = to_array(self.geometry(img), self.cfg.preprocess)  # [3, H, W] float32
        return torch.from_numpy(random_erase(x, self.cfg, self.rng))
