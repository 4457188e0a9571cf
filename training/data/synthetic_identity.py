"""Synthetic pedestrian identities: Market-1501 attributes plus identity-specific detail.

An :class:`Identity` holds everything needed to draw one person the same way in every
camera: the identity-level attributes of the Market-1501 attribute annotation (APR paper)
and finer detail that the attributes do not capture (exact hues, clothing pattern, shoe,
skin and hair colour, body proportions, bag colours). Two identities with equal attributes
therefore still look different, so re-identification is more than attribute recognition.

Market-1501 attribute coding, as in ``market_attribute.mat`` (all values 1 or 2 except age):

=========  ===========================  =========================
field      1                            2
=========  ===========================  =========================
gender     male                         female
hair       short                        long
up         long sleeve                  short sleeve
down       long lower-body clothing     short lower-body clothing
clothes    dress (or skirt)             pants
hat        no                           yes
backpack   no                           yes
bag        no                           yes
handbag    no                           yes
up<col>    no                           yes (at most one colour)
down<col>  no                           yes (at most one colour)
age        1 young, 2 teenager, 3 adult, 4 old
=========  ===========================  =========================

An identity whose upper (lower) colour is not one of the listed colours has every
``up<col>`` (``down<col>``) field at 1, as in the real file.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

RGB = tuple[int, int, int]

UPPER_COLOURS: dict[str, RGB] = {
    "black": (28, 28, 32),
    "white": (236, 236, 230),
    "red": (200, 34, 40),
    "purple": (118, 50, 142),
    "yellow": (235, 220, 40),
    "gray": (128, 128, 128),
    "blue": (38, 70, 182),
    "green": (40, 140, 62),
}
"""Base RGB of the Market-1501 upper-body colours (field ``up<name>``)."""
LOWER_COLOURS: dict[str, RGB] = {
    "black": (28, 28, 32),
    "white": (236, 236, 230),
    "pink": (236, 140, 165),
    "purple": (118, 50, 142),
    "yellow": (235, 220, 40),
    "gray": (128, 128, 128),
    "blue": (40, 68, 165),
    "green": (40, 140, 62),
    "brown": (118, 78, 44),
}
"""Base RGB of the Market-1501 lower-body colours (field ``down<name>``)."""
OTHER_UPPER_COLOURS: dict[str, RGB] = {"orange": (230, 120, 28), "brown": (118, 78, 44)}
"""Upper-body colours outside the annotated set: every ``up<col>`` field is 1 (no)."""
OTHER_LOWER_COLOURS: dict[str, RGB] = {"orange": (230, 120, 28), "khaki": (185, 155, 115)}
"""Lower-body colours outside the annotated set: every ``down<col>`` field is 1 (no)."""

UPPER_PROBS: dict[str, float] = {
    "black": 0.14, "white": 0.28, "red": 0.10, "purple": 0.05, "yellow": 0.06,
    "gray": 0.11, "blue": 0.07, "green": 0.07, "orange": 0.06, "brown": 0.06,
}  # fmt: skip
"""Sampling probabilities of the upper colour, roughly Market-1501's train split."""
LOWER_PROBS: dict[str, float] = {
    "black": 0.36, "white": 0.07, "pink": 0.04, "purple": 0.02, "yellow": 0.02,
    "gray": 0.15, "blue": 0.16, "green": 0.03, "brown": 0.09, "orange": 0.02, "khaki": 0.04,
}  # fmt: skip
"""Sampling probabilities of the lower colour, roughly Market-1501's train split."""

SKIN_TONES: tuple[RGB, ...] = ((236, 200, 170), (214, 170, 130), (180, 130, 95), (120, 84, 60))
HAIR_COLOURS: tuple[RGB, ...] = ((20, 16, 14), (60, 40, 26), (110, 76, 40), (196, 160, 90))
GREY_HAIR: RGB = (170, 170, 168)
SHOE_COLOURS: tuple[RGB, ...] = (
    (20, 20, 20), (240, 240, 240), (90, 60, 40), (120, 120, 125), (200, 40, 40), (40, 60, 150),
)  # fmt: skip
ACCESSORY_COLOURS: tuple[RGB, ...] = (
    (25, 25, 28), (70, 70, 75), (150, 30, 35), (30, 50, 120), (110, 80, 50), (200, 190, 170),
    (60, 110, 60), (220, 120, 160),
)  # fmt: skip

PATTERNS = ("plain", "hstripes", "vstripe", "logo", "collar")
"""Upper-body patterns; the secondary colour never covers more than a third of the torso."""
PATTERN_PROBS = (0.45, 0.15, 0.10, 0.18, 0.12)

# Field order of the real file's structs (they differ between train and test).
MARKET_TRAIN_FIELDS: tuple[str, ...] = (
    "age", "backpack", "bag", "handbag", "downblack", "downblue", "downbrown", "downgray",
    "downgreen", "downpink", "downpurple", "downwhite", "downyellow", "upblack", "upblue",
    "upgreen", "upgray", "uppurple", "upred", "upwhite", "upyellow", "clothes", "down", "up",
    "hair", "hat", "gender", "image_index",
)  # fmt: skip
"""Fields of ``market_attribute.train`` in the real file's order."""
MARKET_TEST_FIELDS: tuple[str, ...] = (
    "age", "backpack", "bag", "handbag", "clothes", "down", "up", "hair", "hat", "gender",
    "upblack", "upwhite", "upred", "uppurple", "upyellow", "upgray", "upblue", "upgreen",
    "downblack", "downwhite", "downpink", "downpurple", "downyellow", "downgray", "downblue",
    "downgreen", "downbrown", "image_index",
)  # fmt: skip
"""Fields of ``market_attribute.test`` in the real file's order."""

_ALL_COLOURS: dict[str, RGB] = {
    **UPPER_COLOURS,
    **LOWER_COLOURS,
    **OTHER_UPPER_COLOURS,
    **OTHER_LOWER_COLOURS,
}
_PALETTE = np.array(list(_ALL_COLOURS.values()), dtype=np.float32)
_PALETTE_NAMES = list(_ALL_COLOURS)


@dataclass(frozen=True)
class Identity:
    """One synthetic person, drawn the same way (up to pose) in every camera."""

    pid: int
    """Identity number as written in file names (1..9999)."""
    gender: int
    """1 male, 2 female (body shape: shoulder and hip width)."""
    age: int
    """1 young, 2 teenager, 3 adult, 4 old (size, hair greying)."""
    hair_long: bool
    """Long hair (falls to the shoulders)."""
    short_sleeve: bool
    """Short sleeves (skin shows below the elbow)."""
    lower_short: bool
    """Short lower-body clothing (shorts or a short skirt)."""
    dress: bool
    """Dress/skirt instead of trousers."""
    hat: bool
    """Wears a hat."""
    backpack: bool
    """Carries a backpack (large from behind, straps from the front)."""
    bag: bool
    """Carries a shoulder bag (strap across the torso, bag at the hip)."""
    handbag: bool
    """Carries a handbag in one hand."""
    upper_colour: str
    """Upper-body colour name (a key of UPPER_COLOURS or OTHER_UPPER_COLOURS)."""
    lower_colour: str
    """Lower-body colour name (a key of LOWER_COLOURS or OTHER_LOWER_COLOURS)."""
    upper_rgb: RGB
    """Exact upper-body RGB, near its colour's base."""
    lower_rgb: RGB
    """Exact lower-body RGB, near its colour's base."""
    pattern: str
    """Upper-body pattern, one of PATTERNS."""
    pattern_rgb: RGB
    """Secondary colour of the pattern."""
    skin_rgb: RGB
    """Skin colour."""
    hair_rgb: RGB
    """Hair colour."""
    shoe_rgb: RGB
    """Shoe colour."""
    hat_rgb: RGB
    """Hat colour (unused without a hat)."""
    backpack_rgb: RGB
    """Backpack colour."""
    bag_rgb: RGB
    """Shoulder-bag colour."""
    handbag_rgb: RGB
    """Handbag colour."""
    height: float
    """Relative body height (1.0 adult average)."""
    build: float
    """Relative body width (shoulders, hips, limbs)."""
    head: float
    """Relative head size."""
    legs: float
    """Relative leg length (moves the waist)."""
    handbag_right: bool
    """Handbag (and shoulder bag) on the person's right side."""


def nearest_colour(rgb: np.ndarray) -> str:
    """Name of the palette colour (all upper, lower and other colours) nearest to ``rgb``."""
    d = np.sum((_PALETTE - np.asarray(rgb, dtype=np.float32)) ** 2, axis=1)
    return _PALETTE_NAMES[int(np.argmin(d))]


def _jitter_colour(rng: np.random.Generator, base: RGB, name: str | None = None) -> RGB:
    """An identity's exact shade of ``base``: hue within 6 degrees, saturation and value
    within about 15 %, greys tinted only faintly.

    With ``name``, the shade stays nearest to that colour even 10 % darker or 5 % brighter,
    so mild shading and exposure changes do not move it to another colour label.
    """
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in base))
    for _ in range(30):
        if s < 0.2:  # black, white, grey: a faint random tint
            hh, ss = rng.random(), min(0.2, s) * rng.uniform(0.0, 1.0) + rng.uniform(0.0, 0.06)
        else:
            hh, ss = (h + rng.uniform(-1 / 60, 1 / 60)) % 1.0, min(1.0, s * rng.uniform(0.85, 1.15))
        vv = min(1.0, v * rng.uniform(0.88, 1.08))
        c = np.floor(np.asarray(colorsys.hsv_to_rgb(hh, ss, vv)) * 255)
        if name is None or all(
            nearest_colour(np.clip(c * k, 0, 255)) == name for k in (0.9, 1.0, 1.05)
        ):
            return (int(c[0]), int(c[1]), int(c[2]))
    return base


def _pick(rng: np.random.Generator, probs: dict[str, float]) -> str:
    names = list(probs)
    p = np.asarray([probs[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _pick_rgb(rng: np.random.Generator, options: tuple[RGB, ...]) -> RGB:
    return options[int(rng.integers(len(options)))]


def _distinct_rgb(rng: np.random.Generator, avoid: RGB) -> RGB:
    """A pattern colour that differs clearly from ``avoid``."""
    for _ in range(10):
        c = _pick_rgb(rng, tuple(_ALL_COLOURS.values()))
        if sum(abs(a - b) for a, b in zip(c, avoid, strict=True)) > 150:
            return c
    return (240, 240, 240) if sum(avoid) < 380 else (20, 20, 20)


def sample_identity(rng: np.random.Generator, pid: int) -> Identity:
    """Draw one identity; attribute frequencies roughly follow Market-1501's train split."""
    female = rng.random() < 0.43
    age = int(rng.choice(4, p=[0.03, 0.74, 0.20, 0.03])) + 1
    dress = female and rng.random() < 0.3
    upper, lower = _pick(rng, UPPER_PROBS), _pick(rng, LOWER_PROBS)
    upper_rgb = _jitter_colour(rng, {**UPPER_COLOURS, **OTHER_UPPER_COLOURS}[upper], upper)
    lower_rgb = _jitter_colour(rng, {**LOWER_COLOURS, **OTHER_LOWER_COLOURS}[lower], lower)
    pattern = PATTERNS[int(rng.choice(len(PATTERNS), p=PATTERN_PROBS))]
    hair = GREY_HAIR if age == 4 else _pick_rgb(rng, HAIR_COLOURS)
    return Identity(
        pid=pid,
        gender=2 if female else 1,
        age=age,
        hair_long=rng.random() < (0.75 if female else 0.07),
        short_sleeve=rng.random() < 0.88,
        lower_short=rng.random() < (0.6 if dress else 0.45),
        dress=dress,
        hat=rng.random() < 0.07,
        backpack=rng.random() < 0.26,
        bag=rng.random() < 0.24,
        handbag=rng.random() < 0.11,
        upper_colour=upper,
        lower_colour=lower,
        upper_rgb=upper_rgb,
        lower_rgb=lower_rgb,
        pattern=pattern,
        pattern_rgb=_distinct_rgb(rng, upper_rgb),
        skin_rgb=_jitter_colour(rng, _pick_rgb(rng, SKIN_TONES)),
        hair_rgb=hair,
        shoe_rgb=_pick_rgb(rng, SHOE_COLOURS),
        hat_rgb=_pick_rgb(rng, ACCESSORY_COLOURS),
        backpack_rgb=_pick_rgb(rng, ACCESSORY_COLOURS),
        bag_rgb=_pick_rgb(rng, ACCESSORY_COLOURS),
        handbag_rgb=_pick_rgb(rng, ACCESSORY_COLOURS),
        height=float(rng.uniform(0.9, 1.05) * (0.85 if age == 1 else 1.0)),
        build=float(rng.uniform(0.88, 1.15)),
        head=float(rng.uniform(0.92, 1.08) * (1.08 if age == 1 else 1.0)),
        legs=float(rng.uniform(0.94, 1.06)),
        handbag_right=bool(rng.random() < 0.5),
    )


def market_labels(identity: Identity) -> dict[str, int]:
    """The identity's 27 attribute values in Market-1501's coding (see the module doc)."""

    def yes(flag: bool) -> int:
        return 2 if flag else 1

    labels = {
        "age": identity.age,
        "backpack": yes(identity.backpack),
        "bag": yes(identity.bag),
        "handbag": yes(identity.handbag),
        "clothes": 1 if identity.dress else 2,
        "down": yes(identity.lower_short),
        "up": yes(identity.short_sleeve),
        "hair": yes(identity.hair_long),
        "hat": yes(identity.hat),
        "gender": identity.gender,
    }
    for name in UPPER_COLOURS:
        labels[f"up{name}"] = yes(identity.upper_colour == name)
    for name in LOWER_COLOURS:
        labels[f"down{name}"] = yes(identity.lower_colour == name)
    return labels
