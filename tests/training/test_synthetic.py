"""Synthetic multi-camera dataset: determinism, Market-1501 layout and attribute file,
rendered pixels that agree with the labels, cameras that differ, the histogram baseline."""

from __future__ import annotations

import colorsys
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from training.data.histogram_baseline import (
    HistogramConfig,
    camera_centre,
    evaluate_histogram_baseline,
    histogram_feature,
)
from training.data.synthetic import (
    ATTRIBUTE_FILE,
    SPLIT_DIRS,
    generate_dataset,
    main,
    market_name,
)
from training.data.synthetic_identity import (
    MARKET_TEST_FIELDS,
    MARKET_TRAIN_FIELDS,
    market_labels,
    sample_identity,
)
from training.data.synthetic_render import (
    NEUTRAL_CAMERA,
    Part,
    make_cameras,
    render_crop,
)

NAME = re.compile(r"^(\d{4}|-1)_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
TINY = dict(num_train_ids=3, num_test_ids=4, num_cameras=3, images_per_camera=2)
TINY_EXTRA = dict(num_distractors=2, num_junk=2)

# Colour families by hue/saturation/value rules, independent of the generator's palette.
FAMILY_OF_NAME = {
    "black": "dark",
    "white": "light",
    "gray": "neutral",
    "red": "red",
    "pink": "pinkish",
    "orange": "brownish",
    "brown": "brownish",
    "khaki": "brownish",
    "yellow": "yellow",
    "green": "green",
    "blue": "blue",
    "purple": "purple",
}


def colour_family_of_name(name: str) -> str:
    return FAMILY_OF_NAME[name]


def colour_family(rgb: np.ndarray) -> str:
    """A coarse colour name from HSV thresholds."""
    h, s, v = colorsys.rgb_to_hsv(*(float(c) / 255 for c in rgb))
    h *= 360
    if v < 0.25:
        return "dark"
    if s < 0.22:
        return "light" if v > 0.75 else "neutral"
    if h < 15 or h >= 330:
        return "pinkish" if s < 0.55 and v > 0.7 else "red"
    for limit, family in ((48, "brownish"), (70, "yellow"), (170, "green"), (250, "blue")):
        if h < limit:
            return family
    return "purple"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("syn") / "a", seed=3, **TINY, **TINY_EXTRA)


def parse(folder: Path) -> list[tuple[int, int, str]]:
    out = []
    for p in sorted(folder.iterdir()):
        m = NAME.match(p.name)
        assert m, f"{p.name} is not a Market-1501 name"
        out.append((int(m.group(1)), int(m.group(2)), p.name))
    return out


def all_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_differs(tiny: Path, tmp_path: Path) -> None:
    again = generate_dataset(tmp_path / "b", seed=3, **TINY, **TINY_EXTRA)
    assert all_bytes(again) == all_bytes(tiny)
    other = all_bytes(generate_dataset(tmp_path / "c", seed=4, **TINY, **TINY_EXTRA))
    first = all_bytes(tiny)
    common = set(first) & set(other)
    assert any(first[k] != other[k] for k in common) or set(first) != set(other)
    assert (
        first[ATTRIBUTE_FILE] != other[ATTRIBUTE_FILE] or first["meta.json"] != other["meta.json"]
    )


def test_layout_names_and_images(tiny: Path) -> None:
    assert {p.name for p in tiny.iterdir()} >= {*SPLIT_DIRS, ATTRIBUTE_FILE}
    train, gallery, query = (parse(tiny / d) for d in SPLIT_DIRS)
    train_ids = {pid for pid, _, _ in train}
    test_ids = {pid for pid, _, _ in gallery if pid > 0}
    assert len(train_ids) == 3 and len(test_ids) == 4
    assert not train_ids & test_ids
    assert {pid for pid, _, _ in query} <= test_ids
    assert sum(pid == 0 for pid, _, _ in gallery) == 2
    assert sum(pid == -1 for pid, _, _ in gallery) == 2
    names = [n for rows in (train, gallery, query) for _, _, n in rows]
    assert len(names) == len(set(names))
    assert all(1 <= cam <= 3 for rows in (train, gallery, query) for _, cam, _ in rows)
    with Image.open(tiny / "query" / query[0][2]) as img:
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (128, 256))


def test_every_query_has_a_cross_camera_match_and_ids_see_two_cameras(tiny: Path) -> None:
    gallery, query = parse(tiny / "bounding_box_test"), parse(tiny / "query")
    cams: dict[int, set[int]] = defaultdict(set)
    for pid, cam, _ in gallery:
        cams[pid].add(cam)
    for pid, cam, name in query:
        assert cams[pid] - {cam}, f"query {name} has no gallery image from another camera"
    for pid, _, _ in query:
        seen = cams[pid] | {c for p, c, _ in query if p == pid}
        assert len(seen) >= 2
    train_cams: dict[int, set[int]] = defaultdict(set)
    for pid, cam, _ in parse(tiny / "bounding_box_train"):
        train_cams[pid].add(cam)
    assert all(len(c) >= 2 for c in train_cams.values())


def test_market_name_format() -> None:
    assert market_name(2, 1, 1, 451, 3) == "0002_c1s1_000451_03.jpg"
    assert market_name(-1, 6, 2, 7, 1) == "-1_c6s2_000007_01.jpg"


def _split(mat_path: Path, split: str) -> np.ndarray:
    return scipy.io.loadmat(mat_path)["market_attribute"][split][0, 0]


def test_attribute_mat_structure_and_coding(tiny: Path) -> None:
    mat = scipy.io.loadmat(tiny / ATTRIBUTE_FILE)
    assert set(mat["market_attribute"].dtype.names) == {"train", "test"}
    for split, fields, folder in (
        ("train", MARKET_TRAIN_FIELDS, "bounding_box_train"),
        ("test", MARKET_TEST_FIELDS, "bounding_box_test"),
    ):
        s = mat["market_attribute"][split][0, 0]
        assert s.dtype.names == fields
        ids = [str(c[0]) for c in s["image_index"][0, 0][0]]
        on_disk = {pid for pid, _, _ in parse(tiny / folder) if pid > 0}
        assert sorted(int(i) for i in ids) == sorted(on_disk)
        assert all(re.fullmatch(r"\d{4}", i) for i in ids)
        for f in fields[:-1]:
            v = s[f][0, 0]
            assert v.dtype == np.uint8 and v.shape == (1, len(ids))
            allowed = {1, 2, 3, 4} if f == "age" else {1, 2}
            assert set(np.unique(v).tolist()) <= allowed, f
        for prefix in ("up", "down"):
            colours = [f for f in fields if f.startswith(prefix) and f != prefix]
            marked = sum((s[f][0, 0] == 2).astype(int) for f in colours)
            assert marked.max() <= 1, f"{split}: an identity has two {prefix} colours"


def test_attribute_mat_has_the_real_files_fields(tiny: Path, shared_data: Path) -> None:
    real = shared_data / "attributes" / "market_attribute.mat"
    if not real.exists():
        pytest.skip(f"{real} is absent")
    for split in ("train", "test"):
        assert _split(tiny / ATTRIBUTE_FILE, split).dtype.names == _split(real, split).dtype.names
        real_index = _split(real, split)["image_index"][0, 0]
        ours_index = _split(tiny / ATTRIBUTE_FILE, split)["image_index"][0, 0]
        assert ours_index.dtype == real_index.dtype
        assert ours_index[0, 0].dtype == real_index[0, 0].dtype  # '<U4' identity strings


def test_project_readers_load_the_dataset(tiny: Path) -> None:
    from training.data.attributes import load_attribute_tables
    from training.data.readers import read_market

    ds = read_market(tiny)
    assert len({s.pid for s in ds.train}) == 3
    tables = load_attribute_tables(tiny / ATTRIBUTE_FILE)
    assert sorted(tables["test"].identities) == sorted({s.pid for s in ds.query})


def test_labels_follow_identity_flags() -> None:
    ind = sample_identity(np.random.default_rng(1), 7)
    labels = market_labels(ind)
    assert len(labels) == 27 and set(labels) == set(MARKET_TRAIN_FIELDS[:-1])
    assert labels["hat"] == (2 if ind.hat else 1)
    assert labels["clothes"] == (1 if ind.dress else 2)
    assert labels["up"] == (2 if ind.short_sleeve else 1)
    assert labels["gender"] == ind.gender


def _identities(n: int) -> list:
    return [sample_identity(np.random.default_rng([11, i]), i + 1) for i in range(n)]


def test_rendered_colours_match_colour_labels_under_neutral_camera() -> None:
    for ind in _identities(60):
        r = render_crop(ind, NEUTRAL_CAMERA, np.random.default_rng(ind.pid), view="front")
        torso = np.median(r.image[r.parts == Part.UPPER], axis=0)
        lower = np.median(r.image[r.parts == Part.LOWER], axis=0)
        # the part map is right and the drawing keeps the identity's exact shade
        assert np.abs(torso - ind.upper_rgb).max() <= 12, (ind.pid, torso, ind.upper_rgb)
        assert np.abs(lower - ind.lower_rgb).max() <= 12, (ind.pid, lower, ind.lower_rgb)
        # and the shade reads as the labelled colour
        assert colour_family(torso) == colour_family_of_name(ind.upper_colour), (ind.pid, torso)
        assert colour_family(lower) == colour_family_of_name(ind.lower_colour), (ind.pid, lower)
        labels = market_labels(ind)
        marked = [f for f, v in labels.items() if f.startswith("up") and f != "up" and v == 2]
        assert marked == ([f"up{ind.upper_colour}"] if f"up{ind.upper_colour}" in labels else [])


def test_hat_and_backpack_pixels_iff_labelled() -> None:
    inds = _identities(120)
    assert any(i.hat for i in inds) and any(i.backpack for i in inds)
    for ind in inds:
        rng = np.random.default_rng(ind.pid)
        front = render_crop(ind, NEUTRAL_CAMERA, rng, view="front")
        back = render_crop(ind, NEUTRAL_CAMERA, rng, view="back")
        assert ((front.parts == Part.HAT).sum() > 20) == ind.hat, ind.pid
        back_pack = int((back.parts == Part.BACKPACK).sum())
        front_pack = int((front.parts == Part.BACKPACK).sum())
        assert (back_pack > 300) == ind.backpack, (ind.pid, back_pack)
        if ind.backpack:  # a backpack shows far more from behind than from the front
            assert back_pack > 3 * front_pack


def test_long_dress_hides_the_knees_short_lower_clothing_shows_skin() -> None:
    for ind in _identities(60):
        r = render_crop(ind, NEUTRAL_CAMERA, np.random.default_rng(ind.pid), view="front")
        rows = np.flatnonzero((r.parts == Part.SHOES).any(axis=1))
        feet_top = rows.min()
        band = r.parts[feet_top - 40 : feet_top - 5]  # shins, above the shoes
        skin = (band == Part.SKIN).sum()
        clothed = (band == Part.LOWER).sum()
        if ind.lower_short:
            assert skin > clothed, ind.pid
        else:
            assert clothed > skin, ind.pid


def test_cameras_differ() -> None:
    cams = make_cameras(4, np.random.default_rng(0))
    ind = _identities(1)[0]
    means = []
    for cam in cams:
        r = render_crop(ind, cam, np.random.default_rng(5), view="front", occlude=False)
        person = r.parts == Part.UPPER
        means.append(r.image[person].astype(np.float64).mean(axis=0))
    spread = max(np.abs(a - b).max() for a in means for b in means)
    assert spread > 15, f"the cameras render the same shirt too alike: {means}"
    assert len({c.background_seed for c in cams}) == 4
    neutral = make_cameras(4, np.random.default_rng(0), severity=0.0)
    assert all(c.gains == (1.0, 1.0, 1.0) and c.gamma == 1.0 for c in neutral)


def test_refuses_to_overwrite_and_validates(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(FileExistsError, match="bounding_box_train"):
        generate_dataset(tiny, seed=3, **TINY)
    with pytest.raises(ValueError, match="min_cameras"):
        generate_dataset(tmp_path / "x", num_cameras=1)
    with pytest.raises(ValueError, match="at least one train"):
        generate_dataset(tmp_path / "y", num_test_ids=0)
    with pytest.raises(ValueError, match="seed"):
        generate_dataset(tmp_path / "z", seed=-1)


def test_cli_writes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--train-ids", "2", "--test-ids", "2", "--cameras", "2"]) == 0
    assert str(out) in capsys.readouterr().out
    assert len(list((out / "query").iterdir())) >= 2


def test_histogram_feature_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (256, 128, 3), dtype=np.uint8))
    cfg = HistogramConfig(stripes=4, hue_bins=4, sat_bins=2, val_bins=2, height=32)
    feat = histogram_feature(img, cfg)
    hsv = np.asarray(img.resize((16, 32), Image.Resampling.BILINEAR).convert("HSV"))
    expected = np.zeros((4, 16))
    for y in range(32):
        for x in range(16):
            h, s, v = (int(c) for c in hsv[y, x])
            expected[y // 8, (h // 64) * 4 + (s // 128) * 2 + v // 128] += 1
    expected = np.sqrt(expected / 128)
    assert feat.dtype == np.float32
    np.testing.assert_allclose(feat, expected.ravel(), atol=1e-6)


def test_camera_centre_zeroes_each_cameras_mean() -> None:
    rng = np.random.default_rng(0)
    q, g = rng.random((5, 3), dtype=np.float32), rng.random((7, 3), dtype=np.float32)
    qc, gc = np.array([1, 2, 1, 2, 1]), np.array([1, 1, 2, 2, 2, 1, 2])
    qn, gn = camera_centre(q, qc, g, gc)
    feats, cams = np.concatenate([qn, gn]), np.concatenate([qc, gc])
    for c in (1, 2):
        np.testing.assert_allclose(feats[cams == c].mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(qn[0] - qn[2], q[0] - q[2], atol=1e-6)
    assert qn.dtype == np.float32


def test_histogram_baseline_runs_on_the_dataset(tiny: Path) -> None:
    result = evaluate_histogram_baseline(tiny)
    assert result.num_valid == len(list((tiny / "query").iterdir()))
    assert 0.0 <= result.rank(1) <= 1.0 and 0.0 < result.mAP <= 1.0
