from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from reidcore.preprocess import PreprocessConfig, to_array
from training.data.transforms import (
    EvalTransform,
    TrainTransform,
    TrainTransformConfig,
    erase_box,
    random_erase,
    shift_crop,
)

SMALL = PreprocessConfig(height=32, width=16)
PLAIN = dict(flip_p=0.0, pad=0, erase_p=0.0)  # every augmentation off


def random_image(h: int = 48, w: int = 20, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))


def test_output_shape_and_dtype() -> None:
    img = random_image()
    for transform in (
        TrainTransform(TrainTransformConfig(preprocess=SMALL)),
        EvalTransform(SMALL),
    ):
        x = transform(img)
        assert isinstance(x, torch.Tensor)
        assert x.shape == (3, 32, 16) and x.dtype == torch.float32
    x = TrainTransform(TrainTransformConfig())(img)  # defaults: 256×128, all augmentations
    assert x.shape == (3, 256, 128) and x.dtype == torch.float32


def test_eval_transform_is_the_shared_preprocessing() -> None:
    img = random_image()
    cfg = PreprocessConfig(height=40, width=24, interpolation="bicubic", mean=(0.5, 0.4, 0.3))
    np.testing.assert_array_equal(EvalTransform(cfg)(img).numpy(), to_array(img, cfg))


def test_train_transform_without_augmentation_equals_eval() -> None:
    img = random_image()
    x = TrainTransform(TrainTransformConfig(preprocess=SMALL, **PLAIN))(img)
    np.testing.assert_array_equal(x.numpy(), to_array(img, SMALL))


def test_flip_really_flips() -> None:
    img = random_image()
    x = TrainTransform(TrainTransformConfig(preprocess=SMALL, **{**PLAIN, "flip_p": 1.0}))(img)
    ref = to_array(img, SMALL)[:, :, ::-1]  # mirror of the resized image
    np.testing.assert_array_equal(x.numpy(), ref)
    assert not np.array_equal(x.numpy(), to_array(img, SMALL))


def test_shift_crop_equals_pad_then_crop() -> None:
    arr = np.asarray(random_image(12, 9))
    pad = 3
    padded = np.pad(arr, ((pad, pad), (pad, pad), (0, 0)))  # zero fill
    for dx in range(-pad, pad + 1):
        for dy in range(-pad, pad + 1):
            top, left = pad - dy, pad - dx
            ref = padded[top : top + 12, left : left + 9]
            got = np.asarray(shift_crop(Image.fromarray(arr), dx, dy))
            np.testing.assert_array_equal(got, ref)


def test_pad_crop_output_is_one_of_the_shifted_images() -> None:
    img = random_image(32, 16)  # already at the target size: no resize
    arr = np.asarray(img)
    pad = 2
    cfg = TrainTransformConfig(preprocess=SMALL, **{**PLAIN, "pad": pad})
    transform = TrainTransform(cfg, seed=3)
    padded = np.pad(arr, ((pad, pad), (pad, pad), (0, 0)))
    crops = [
        to_array(Image.fromarray(padded[t : t + 32, l : l + 16]), SMALL)
        for t in range(2 * pad + 1)
        for l in range(2 * pad + 1)
    ]
    seen = set()
    for _ in range(30):
        x = transform(img).numpy()
        hits = [i for i, c in enumerate(crops) if np.array_equal(x, c)]
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) > 3  # the offset really varies


def test_erase_box_stays_in_bounds_and_in_range() -> None:
    rng = np.random.default_rng(0)
    area, aspect = (0.02, 0.4), (0.3, 3.33)
    for _ in range(500):
        box = erase_box(256, 128, area, aspect, rng)
        assert box is not None
        top, left, h, w = box
        assert 0 <= top <= 256 - h and 0 <= left <= 128 - w
        # integer rounding moves area and ratio a little; the bounds hold up to that
        assert 0.02 * 0.85 <= h * w / (256 * 128) <= 0.4 * 1.15
        assert 0.3 * 0.85 <= h / w <= 3.33 * 1.15


def test_erase_box_gives_up_when_nothing_fits() -> None:
    rng = np.random.default_rng(0)
    assert erase_box(1, 1, (0.5, 0.9), (1.0, 1.0), rng) is None


@pytest.mark.parametrize("fill", ["mean", "random"])
def test_random_erase_changes_exactly_one_rectangle(fill: str) -> None:
    cfg = TrainTransformConfig(preprocess=SMALL, erase_p=1.0, erase_fill=fill)
    rng = np.random.default_rng(1)
    base = np.full((3, 32, 16), 7.0, dtype=np.float32)  # a value neither fill can produce
    for _ in range(50):
        x = random_erase(base.copy(), cfg, rng)
        assert x.dtype == np.float32
        changed = (x != 7.0).any(axis=0)
        rows, cols = np.nonzero(changed)
        assert rows.size > 0
        box = changed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all(), "the erased pixels form one full rectangle"
        region = x[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        if fill == "mean":
            assert (region == 0).all()
        else:
            mean = np.asarray(SMALL.mean)[:, None, None]
            std = np.asarray(SMALL.std)[:, None, None]
            pixels = region * std + mean  # back to [0, 1) pixel values
            assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_erase_probability_is_respected() -> None:
    cfg = TrainTransformConfig(preprocess=SMALL, erase_p=0.5)
    rng = np.random.default_rng(2)
    erased = sum(
        bool((random_erase(np.full((3, 32, 16), 7.0, np.float32), cfg, rng) != 7.0).any())
        for _ in range(400)
    )
    assert 140 < erased < 260  # binomial(400, 0.5): mean 200, sd 10
    never = TrainTransformConfig(preprocess=SMALL, erase_p=0.0)
    x = random_erase(np.full((3, 32, 16), 7.0, np.float32), never, rng)
    assert (x == 7.0).all()


def test_seeding_makes_augmentation_reproducible() -> None:
    img = random_image()
    cfg = TrainTransformConfig(preprocess=SMALL)
    a, b = TrainTransform(cfg, seed=5), TrainTransform(cfg, seed=5)
    outs_a = [a(img) for _ in range(5)]
    outs_b = [b(img) for _ in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(outs_a, outs_b, strict=True))
    b.reseed(6)
    assert not all(torch.equal(x, b(img)) for x in outs_a)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(TrainTransform(cfg, seed=g1)(img), TrainTransform(cfg, seed=g2)(img))


def test_grayscale_input_becomes_three_channels() -> None:
    img = random_image().convert("L")
    x = TrainTransform(TrainTransformConfig(preprocess=SMALL))(img)
    assert x.shape == (3, 32, 16)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("flip_p", 1.5, "flip_p"),
        ("pad", -1, "pad"),
        ("erase_area", (0.5, 0.2), "erase_area"),
        ("erase_aspect", (0.0, 1.0), "erase_aspect"),
        ("erase_fill", "noise", "erase_fill"),
    ],
)
def test_invalid_config_is_reported(field: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainTransformConfig(**{field: value})  # type: ignore[arg-type]
