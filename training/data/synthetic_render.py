"""Drawing synthetic pedestrians with PIL, and the cameras that see them.

:func:`draw_person` draws one :class:`~training.data.synthetic_identity.Identity` on a
transparent canvas in a view (front, back, facing left or right) and walking phase, together
with a part map (one :class:`Part` code per pixel: the last body part drawn there).
:func:`render_crop` places that person in a camera's scene (background, scale, offset,
occluder) and applies the camera (white balance, exposure, gamma, saturation, resolution,
blur, noise), returning the 256×128 RGB crop and its part map. :data:`NEUTRAL_CAMERA`
leaves colours as drawn, which is what the attribute-consistency tests use.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from training.data.synthetic_identity import RGB, Identity

CROP_HEIGHT = 256
CROP_WIDTH = 128
VIEWS = ("front", "back", "left", "right")
"""Viewpoints: seen from the front, from behind, walking to the left, walking to the right."""

_CANVAS_W, _CANVAS_H = 200, 400  # person canvas; drawn at about 2x the crop, then reduced
_TOP, _BOTTOM = 22, 394  # top of the head and sole of the feet on the canvas
_BG_H, _BG_W = 320, 224  # camera background texture, larger than a crop


class Part(IntEnum):
    """Codes of the part map: which thing was drawn last at a pixel."""

    BACKGROUND = 0
    HAIR = 1
    FACE = 2
    HAT = 3
    UPPER = 4
    SKIN = 5
    LOWER = 6
    SHOES = 7
    BACKPACK = 8
    BAG = 9
    HANDBAG = 10
    OCCLUDER = 11


@dataclass(frozen=True)
class Camera:
    """One camera of the synthetic network: its scene and its colour rendition."""

    index: int
    """Camera number as written in file names (1-based)."""
    gains: tuple[float, float, float]
    """Per-channel RGB gains (white balance times exposure)."""
    gamma: float
    """Tone curve exponent applied to [0, 1] intensities."""
    saturation: float
    """Colour saturation factor (1 keeps colours, 0 makes grey)."""
    blur: float
    """Gaussian blur radius in pixels (0: none)."""
    resolution: float
    """Sensor resolution relative to the crop (< 1: downscaled and upscaled back)."""
    noise: float
    """Standard deviation of additive Gaussian noise on [0, 1] intensities."""
    jpeg_quality: int
    """JPEG quality of the written crops."""
    scale: tuple[float, float]
    """Range of person height as a fraction of the crop height."""
    view_probs: tuple[float, float, float, float]
    """Probabilities of the views in VIEWS order."""
    occlusion: float
    """Probability that an occluder covers part of the person."""
    exposure_jitter: float
    """Per-image exposure varies by a factor in [1 - jitter, 1 + jitter]."""
    background_seed: int
    """Seed of the camera's background texture (0: plain grey, as for NEUTRAL_CAMERA)."""


NEUTRAL_CAMERA = Camera(
    index=1,
    gains=(1.0, 1.0, 1.0),
    gamma=1.0,
    saturation=1.0,
    blur=0.0,
    resolution=1.0,
    noise=0.0,
    jpeg_quality=95,
    scale=(0.9, 0.9),
    view_probs=(1.0, 0.0, 0.0, 0.0),
    occlusion=0.0,
    exposure_jitter=0.0,
    background_seed=0,
)
"""A camera that keeps drawn colours: no colour change, blur, noise or occluder."""


@dataclass
class Rendered:
    """One rendered crop."""

    image: np.ndarray
    """RGB pixels [H, W, 3] uint8, before JPEG compression."""
    parts: np.ndarray
    """Part map [H, W] uint8 of :class:`Part` codes."""
    view: str
    """The view drawn, one of VIEWS."""


def make_cameras(num_cameras: int, rng: np.random.Generator, severity: float = 1.0) -> list[Camera]:
    """Draw ``num_cameras`` cameras that differ in colour rendition, scene, scale and views.

    ``severity`` scales how far the colour rendition (white balance, exposure, gamma,
    saturation) strays from neutral: 0 keeps colours, 1 is the default, 2 is harsh.
    """
    if num_cameras < 2:
        raise ValueError(f"need at least 2 cameras for cross-camera matching, got {num_cameras}")
    if severity < 0:
        raise ValueError(f"camera severity must not be negative, got {severity}")
    cams = []
    for i in range(num_cameras):
        temp, tint = rng.uniform(-1, 1) * severity, rng.uniform(-1, 1) * severity
        exposure = 2.0 ** (rng.uniform(-0.5, 0.3) * severity)
        gains = (
            exposure * (1 + 0.2 * temp),
            exposure * (1 + 0.06 * tint),
            exposure * (1 - 0.2 * temp),
        )
        views = rng.dirichlet(np.full(4, 0.9)) * 0.7 + 0.075  # every view possible
        lo = rng.uniform(0.78, 0.9)
        cams.append(
            Camera(
                index=i + 1,
                gains=(float(gains[0]), float(gains[1]), float(gains[2])),
                gamma=float(2.0 ** (rng.uniform(-0.3, 0.3) * severity)),
                saturation=float(max(0.0, 1.0 + rng.uniform(-0.35, 0.2) * severity)),
                blur=float(rng.choice([0.0, 0.6, 1.0, 1.4])),
                resolution=float(rng.uniform(0.35, 1.0)),
                noise=float(rng.uniform(0.005, 0.04)),
                jpeg_quality=int(rng.integers(55, 93)),
                scale=(float(lo), float(min(lo + 0.15, 0.98))),
                view_probs=(float(views[0]), float(views[1]), float(views[2]), float(views[3])),
                occlusion=float(rng.uniform(0.05, 0.35)),
                exposure_jitter=float(rng.uniform(0.05, 0.15)),
                background_seed=int(rng.integers(1, 2**31)),
            )
        )
    return cams


# --------------------------------------------------------------------------- drawing


class _Painter:
    """Draws each shape on the RGBA canvas and, with its part code, on the part map."""

    def __init__(self) -> None:
        self.image = Image.new("RGBA", (_CANVAS_W, _CANVAS_H), (0, 0, 0, 0))
        self.parts = Image.new("L", (_CANVAS_W, _CANVAS_H), 0)
        self._rgb = ImageDraw.Draw(self.image)
        self._map = ImageDraw.Draw(self.parts)

    def polygon(self, pts: Sequence[tuple[float, float]], rgb: RGB, part: Part) -> None:
        self._rgb.polygon(list(pts), fill=(*rgb, 255))
        self._map.polygon(list(pts), fill=int(part))

    def ellipse(self, box: Sequence[float], rgb: RGB, part: Part) -> None:
        self._rgb.ellipse(list(box), fill=(*rgb, 255))
        self._map.ellipse(list(box), fill=int(part))

    def rect(self, box: Sequence[float], rgb: RGB, part: Part) -> None:
        self._rgb.rectangle(list(box), fill=(*rgb, 255))
        self._map.rectangle(list(box), fill=int(part))

    def limb(self, pts: Sequence[tuple[float, float]], width: float, rgb: RGB, part: Part) -> None:
        """A thick polyline with round joints and ends."""
        w = max(1, round(width))
        self._rgb.line(list(pts), fill=(*rgb, 255), width=w)
        self._map.line(list(pts), fill=int(part), width=w)
        r = width / 2
        for x, y in pts:
            self.ellipse((x - r, y - r, x + r, y + r), rgb, part)


@dataclass(frozen=True)
class _Body:
    """Canvas geometry of one identity (pixels)."""

    cx: float
    top: float
    head_h: float
    head_w: float
    shoulder: float
    half_shoulder: float
    hip: float
    half_hip: float
    knee: float
    ankle: float
    bottom: float
    limb: float
    depth: float


def _body(identity: Identity) -> _Body:
    u = float(_BOTTOM - _TOP)
    head_h = 0.13 * u * identity.head
    female = identity.gender == 2
    ankle = _BOTTOM - 0.035 * u
    hip = ankle - 0.45 * u * identity.legs
    return _Body(
        cx=_CANVAS_W / 2,
        top=float(_TOP),
        head_h=head_h,
        head_w=0.7 * head_h,
        shoulder=_TOP + head_h + 0.025 * u,
        half_shoulder=0.13 * u * identity.build * (0.9 if female else 1.0),
        hip=hip,
        half_hip=0.095 * u * identity.build * (1.1 if female else 1.0),
        knee=hip + 0.48 * (ankle - hip),
        ankle=ankle,
        bottom=float(_BOTTOM),
        limb=0.056 * u * identity.build,
        depth=0.08 * u * identity.build,
    )


def _shade(rgb: RGB, k: float) -> RGB:
    return (min(255, int(rgb[0] * k)), min(255, int(rgb[1] * k)), min(255, int(rgb[2] * k)))


def _draw_legs(p: _Painter, ind: Identity, b: _Body, feet_x: Sequence[float]) -> None:
    """Legs (skin below short clothing), trousers or skirt, and shoes. ``feet_x``: ankle x."""
    tops = [b.cx - b.half_hip * 0.5, b.cx + b.half_hip * 0.5]
    w_top, w_ank = b.half_hip * 1.0, b.limb * 0.75
    for xt, xa in zip(tops, feet_x, strict=True):
        p.limb([(xt, b.hip + w_top / 2), (xa, b.ankle)], w_ank * 1.1, ind.skin_rgb, Part.SKIN)
        p.ellipse(
            (xa - 0.9 * w_ank, b.ankle - 4, xa + 1.3 * w_ank, b.bottom), ind.shoe_rgb, Part.SHOES
        )
        if ind.dress:
            continue
        end = b.knee if ind.lower_short else b.ankle
        frac = (end - b.hip) / (b.ankle - b.hip)
        xe = xt + (xa - xt) * frac
        half_top, half_end = w_top / 2 + 1, w_ank * 0.65 + (1 - frac) * 6
        p.polygon(
            [
                (xt - half_top, b.hip - 6),
                (xt + half_top, b.hip - 6),
                (xe + half_end, end),
                (xe - half_end, end),
            ],
            ind.lower_rgb,
            Part.LOWER,
        )
    if ind.dress:
        end = b.knee + 8 if ind.lower_short else b.ankle - 14
        flare = b.half_hip * (1.35 if ind.lower_short else 1.6)
        p.polygon(
            [
                (b.cx - b.half_hip, b.hip - 8),
                (b.cx + b.half_hip, b.hip - 8),
                (b.cx + flare, end),
                (b.cx - flare, end),
            ],
            ind.lower_rgb,
            Part.LOWER,
        )


def _draw_arm(
    p: _Painter,
    ind: Identity,
    b: _Body,
    shoulder: tuple[float, float],
    hand: tuple[float, float],
    shade: float,
) -> None:
    """An arm from shoulder to hand: sleeve in the upper colour, skin below a short sleeve."""
    sx, sy = shoulder
    hx, hy = hand
    elbow = (sx + (hx - sx) * 0.5, sy + (hy - sy) * 0.5)
    skin, sleeve = _shade(ind.skin_rgb, shade), _shade(ind.upper_rgb, shade)
    p.limb([shoulder, elbow, hand], b.limb * 0.8, skin, Part.SKIN)
    if ind.short_sleeve:
        cuff = (sx + (elbow[0] - sx) * 0.6, sy + (elbow[1] - sy) * 0.6)
        p.limb([shoulder, cuff], b.limb * 1.05, sleeve, Part.UPPER)
    else:
        p.limb(
            [shoulder, elbow, (hx - (hx - elbow[0]) * 0.1, hy - (hy - elbow[1]) * 0.1)],
            b.limb * 0.95,
            sleeve,
            Part.UPPER,
        )
    r = b.limb * 0.5
    p.ellipse((hx - r, hy - r, hx + r, hy + r * 1.3), skin, Part.SKIN)


def _torso_front(b: _Body) -> list[tuple[float, float]]:
    s, h = b.half_shoulder, b.half_hip * 0.98
    return [
        (b.cx - s * 0.7, b.shoulder - 2),
        (b.cx + s * 0.7, b.shoulder - 2),
        (b.cx + s, b.shoulder + 14),
        (b.cx + h, b.hip + 2),
        (b.cx - h, b.hip + 2),
        (b.cx - s, b.shoulder + 14),
    ]


def _draw_head_front(p: _Painter, ind: Identity, b: _Body, back: bool) -> None:
    """Neck, head, hair and hat seen from the front (or from behind when ``back``)."""
    cx, hw, hh, top = b.cx, b.head_w, b.head_h, b.top
    p.rect(
        (cx - hw * 0.22, top + hh * 0.8, cx + hw * 0.22, b.shoulder + 4), ind.skin_rgb, Part.SKIN
    )
    head_box = (cx - hw / 2, top, cx + hw / 2, top + hh)
    if back:
        p.ellipse(head_box, ind.hair_rgb, Part.HAIR)
        if ind.hair_long:
            p.polygon(
                [
                    (cx - hw * 0.55, top + hh * 0.4),
                    (cx + hw * 0.55, top + hh * 0.4),
                    (cx + hw * 0.65, b.shoulder + 0.1 * (b.bottom - b.top)),
                    (cx - hw * 0.65, b.shoulder + 0.1 * (b.bottom - b.top)),
                ],
                ind.hair_rgb,
                Part.HAIR,
            )
    else:
        p.ellipse(
            (cx - hw * 0.53, top - 2, cx + hw * 0.53, top + hh * 0.7), ind.hair_rgb, Part.HAIR
        )
        p.ellipse(
            (cx - hw * 0.45, top + hh * 0.25, cx + hw * 0.45, top + hh), ind.skin_rgb, Part.FACE
        )
        eye_y, dx, r = top + hh * 0.5, hw * 0.2, max(1.5, hw * 0.06)
        for ex in (cx - dx, cx + dx):
            p.ellipse((ex - r, eye_y - r, ex + r, eye_y + r), (40, 30, 30), Part.FACE)
        if ind.hair_long:
            for side in (-1, 1):
                x0 = cx + side * hw * 0.5
                p.polygon(
                    [
                        (x0, top + hh * 0.25),
                        (x0 + side * hw * 0.14, top + hh * 0.3),
                        (x0 + side * hw * 0.2, b.shoulder + 22),
                        (x0 - side * hw * 0.12, b.shoulder + 18),
                    ],
                    ind.hair_rgb,
                    Part.HAIR,
                )
    _draw_hat(p, ind, b, facing=0)


def _draw_hat(p: _Painter, ind: Identity, b: _Body, facing: int) -> None:
    """A cap (brim ahead when ``facing`` is +1 or -1) or beanie over the top of the head."""
    if not ind.hat:
        return
    cx, hw, hh, top = b.cx, b.head_w, b.head_h, b.top
    p.ellipse(
        (cx - hw * 0.58, top - hh * 0.12, cx + hw * 0.58, top + hh * 0.55), ind.hat_rgb, Part.HAT
    )
    p.rect((cx - hw * 0.58, top + hh * 0.18, cx + hw * 0.58, top + hh * 0.3), ind.hat_rgb, Part.HAT)
    if ind.pid % 2 == 0:  # a cap: brim
        if facing == 0:
            p.rect(
                (cx - hw * 0.62, top + hh * 0.26, cx + hw * 0.62, top + hh * 0.34),
                _shade(ind.hat_rgb, 0.8),
                Part.HAT,
            )
        else:
            p.rect(
                (cx, top + hh * 0.24, cx + hw * 0.95, top + hh * 0.33),
                _shade(ind.hat_rgb, 0.8),
                Part.HAT,
            )


def _draw_carried_front(
    p: _Painter, ind: Identity, b: _Body, back: bool, hands: Sequence[tuple[float, float]]
) -> None:
    """Backpack (whole from behind, straps from the front), shoulder bag and handbag."""
    s, u = b.half_shoulder, b.bottom - b.top
    if ind.backpack:
        if back:
            box = (b.cx - s * 0.78, b.shoulder + 0.02 * u, b.cx + s * 0.78, b.shoulder + 0.27 * u)
            p.rect(box, ind.backpack_rgb, Part.BACKPACK)
            pocket = (b.cx - s * 0.5, box[1] + 0.13 * u, b.cx + s * 0.5, box[3] - 0.02 * u)
            p.rect(pocket, _shade(ind.backpack_rgb, 0.75), Part.BACKPACK)
        else:
            for side in (-1, 1):
                x = b.cx + side * s * 0.6
                p.limb(
                    [(x, b.shoulder), (x - side * 3, b.shoulder + 0.2 * u)],
                    0.02 * u,
                    ind.backpack_rgb,
                    Part.BACKPACK,
                )
    side = 1 if ind.handbag_right != back else -1  # the person's right is the viewer's left
    if ind.bag:
        p.limb(
            [(b.cx + side * s * 0.6, b.shoulder), (b.cx - side * b.half_hip, b.hip - 0.02 * u)],
            0.015 * u,
            _shade(ind.bag_rgb, 0.8),
            Part.BAG,
        )
        x = b.cx - side * (b.half_hip + 0.03 * u)
        p.rect(
            (x - 0.05 * u, b.hip - 0.05 * u, x + 0.05 * u, b.hip + 0.06 * u), ind.bag_rgb, Part.BAG
        )
    if ind.handbag:
        hx, hy = hands[0] if side < 0 else hands[-1]
        p.limb(
            [(hx - 0.02 * u, hy + 0.01 * u), (hx, hy - 0.01 * u), (hx + 0.02 * u, hy + 0.01 * u)],
            0.008 * u,
            ind.handbag_rgb,
            Part.HANDBAG,
        )
        p.rect(
            (hx - 0.04 * u, hy + 0.01 * u, hx + 0.04 * u, hy + 0.08 * u),
            ind.handbag_rgb,
            Part.HANDBAG,
        )


def _draw_front_or_back(p: _Painter, ind: Identity, b: _Body, back: bool, phase: float) -> None:
    swing = 0.02 * (b.bottom - b.top) * math.sin(2 * math.pi * phase)
    spread = b.half_hip * 0.55
    _draw_legs(p, ind, b, [b.cx - spread - swing * 0.3, b.cx + spread + swing * 0.3])
    p.polygon(_torso_front(b), ind.upper_rgb, Part.UPPER)
    hands = []
    for side in (-1, 1):
        sh = (b.cx + side * (b.half_shoulder - b.limb * 0.35), b.shoulder + b.limb * 0.5)
        hand = (
            b.cx + side * (b.half_shoulder + b.limb * 0.3),
            b.hip + 0.03 * (b.bottom - b.top) + side * swing,
        )
        _draw_arm(p, ind, b, sh, hand, 1.0)
        hands.append(hand)
    if back and ind.backpack:
        _draw_carried_front(p, ind, b, back, hands)
        _draw_head_front(p, ind, b, back)
    else:
        _draw_head_front(p, ind, b, back)
        _draw_carried_front(p, ind, b, back, hands)


def _draw_side(p: _Painter, ind: Identity, b: _Body, phase: float) -> None:
    """The person walking to the right (mirrored afterwards for the left view)."""
    u = b.bottom - b.top
    stride = 0.09 * u * math.sin(2 * math.pi * phase)
    d = b.depth * (1.1 if ind.gender == 2 else 1.0)
    sh = (b.cx - d * 0.1, b.shoulder + b.limb * 0.5)
    back_hand = (b.cx + stride * 0.7, b.hip + 0.02 * u)
    _draw_arm(p, ind, b, sh, back_hand, 0.78)
    _draw_legs(p, ind, b, [b.cx + stride, b.cx - stride])
    torso = [
        (b.cx - d * 0.8, b.shoulder - 2),
        (b.cx + d * 0.7, b.shoulder - 2),
        (b.cx + d, b.shoulder + 0.1 * u),
        (b.cx + d * 0.9, b.hip + 2),
        (b.cx - d * 0.95, b.hip + 2),
        (b.cx - d, b.shoulder + 0.08 * u),
    ]
    p.polygon(torso, ind.upper_rgb, Part.UPPER)
    if ind.backpack:
        p.rect(
            (
                b.cx - d - 0.09 * u,
                b.shoulder + 0.02 * u,
                b.cx - d + 0.01 * u,
                b.shoulder + 0.26 * u,
            ),
            ind.backpack_rgb,
            Part.BACKPACK,
        )
        p.limb(
            [(b.cx - d * 0.6, b.shoulder), (b.cx + d * 0.2, b.shoulder + 0.15 * u)],
            0.02 * u,
            ind.backpack_rgb,
            Part.BACKPACK,
        )
    if ind.bag:
        p.limb(
            [(b.cx, b.shoulder), (b.cx, b.hip - 0.02 * u)],
            0.015 * u,
            _shade(ind.bag_rgb, 0.8),
            Part.BAG,
        )
        p.rect(
            (b.cx - 0.05 * u, b.hip - 0.05 * u, b.cx + 0.05 * u, b.hip + 0.06 * u),
            ind.bag_rgb,
            Part.BAG,
        )
    front_hand = (b.cx - stride * 0.7, b.hip + 0.02 * u)
    _draw_arm(p, ind, b, sh, front_hand, 1.0)
    if ind.handbag:
        hx, hy = front_hand
        p.rect(
            (hx - 0.04 * u, hy + 0.01 * u, hx + 0.04 * u, hy + 0.08 * u),
            ind.handbag_rgb,
            Part.HANDBAG,
        )
    hw, hh, top, cx = b.head_w * 1.1, b.head_h, b.top, b.cx
    p.rect((cx - hw * 0.2, top + hh * 0.8, cx + hw * 0.2, b.shoulder + 4), ind.skin_rgb, Part.SKIN)
    p.ellipse((cx - hw / 2, top, cx + hw / 2, top + hh), ind.skin_rgb, Part.FACE)
    p.ellipse(
        (cx + hw * 0.15, top + hh * 0.42, cx + hw * 0.27, top + hh * 0.54), (40, 30, 30), Part.FACE
    )
    p.polygon(
        [
            (cx - hw * 0.55, top + hh * 0.15),
            (cx + hw * 0.2, top - 2),
            (cx + hw * 0.5, top + hh * 0.3),
            (cx, top + hh * 0.35),
            (cx - hw * 0.2, top + hh * 0.85),
            (cx - hw * 0.5, top + hh * 0.75),
        ],
        ind.hair_rgb,
        Part.HAIR,
    )
    if ind.hair_long:
        p.polygon(
            [
                (cx - hw * 0.5, top + hh * 0.3),
                (cx - hw * 0.1, top + hh * 0.5),
                (cx - hw * 0.25, b.shoulder + 0.1 * u),
                (cx - hw * 0.65, b.shoulder + 0.09 * u),
            ],
            ind.hair_rgb,
            Part.HAIR,
        )
    _draw_hat(p, ind, b, facing=1)


def _apply_pattern(rgba: np.ndarray, parts: np.ndarray, ind: Identity, b: _Body, view: str) -> None:
    """Overlay the upper-body pattern (in place) on torso pixels of the part map."""
    if ind.pattern == "plain":
        return
    u = b.bottom - b.top
    ys, xs = np.mgrid[0:_CANVAS_H, 0:_CANVAS_W]
    torso = (
        (parts == Part.UPPER)
        & (ys >= b.shoulder - 2)
        & (ys <= b.hip + 2)
        & (np.abs(xs - b.cx) <= b.half_shoulder * 0.85)
    )
    match ind.pattern:
        case "hstripes":
            period = max(6, int(0.035 * u))
            mask = torso & ((ys - int(b.shoulder)) % period < period * 0.3)
        case "collar":
            mask = torso & (ys < b.shoulder + 0.04 * u)
        case "vstripe" if view == "front":
            mask = torso & (np.abs(xs - b.cx) < b.half_shoulder * 0.16)
        case "logo" if view == "front":
            mask = (
                torso
                & (np.abs(xs - b.cx) < b.half_shoulder * 0.35)
                & (ys > b.shoulder + 0.06 * u)
                & (ys < b.shoulder + 0.14 * u)
            )
        case _:
            return
    rgba[mask, :3] = ind.pattern_rgb


def draw_person(identity: Identity, view: str, phase: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``identity`` in ``view`` at walking ``phase`` in [0, 1).

    Returns the RGBA canvas [400, 200, 4] uint8 (alpha 0 outside the person) and the part
    map [400, 200] uint8. The person stands with the top of the head near row 22 and the
    soles at row 394, horizontally centred.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; valid: {VIEWS}")
    b = _body(identity)
    p = _Painter()
    if view in ("front", "back"):
        _draw_front_or_back(p, identity, b, view == "back", phase)
    else:
        _draw_side(p, identity, b, phase)
    rgba = np.array(p.image)
    parts = np.array(p.parts)
    _apply_pattern(rgba, parts, identity, b, view)
    # mild cylindrical shading, symmetric around 1.0 so that colours keep their label
    x = (np.arange(_CANVAS_W, dtype=np.float32) - b.cx) / np.float32(b.half_shoulder * 1.3)
    shade = np.float32(1.04) - np.float32(0.1) * np.minimum(x * x, np.float32(1.0))
    rgba[..., :3] = np.clip(rgba[..., :3] * shade[None, :, None], 0, 255).astype(np.uint8)
    if view == "left":
        rgba, parts = rgba[:, ::-1].copy(), parts[:, ::-1].copy()
    return rgba, parts


# --------------------------------------------------------------------------- scene and camera


def _muted(rng: np.random.Generator, lo: float, hi: float, tint: float) -> RGB:
    """A greyish colour: a grey level in [lo, hi] plus a Gaussian tint of spread ``tint``."""
    c = np.clip(rng.uniform(lo, hi) + rng.normal(0, tint, 3), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


@functools.lru_cache(maxsize=64)
def camera_background(seed: int) -> np.ndarray:
    """The background texture [320, 224, 3] uint8 of a camera (plain grey for seed 0).

    Wall and floor colours, floor tiles, wall features (windows, doors, signs), shrubs and
    poles, plus low-frequency mottling; crops take a random window of it.
    """
    if seed == 0:
        return np.full((_BG_H, _BG_W, 3), 128, dtype=np.uint8)
    rng = np.random.default_rng(seed)
    wall, floor = _muted(rng, 70, 210, 18), _muted(rng, 50, 170, 12)
    horizon = int(rng.uniform(0.4, 0.8) * _BG_H)
    img = Image.new("RGB", (_BG_W, _BG_H), wall)
    d = ImageDraw.Draw(img)
    d.rectangle((0, horizon, _BG_W, _BG_H), fill=floor)
    line = _shade(floor, 0.8)
    y, step = float(horizon), 6.0
    while y < _BG_H:  # tiles get wider towards the camera
        d.line((0, int(y), _BG_W, int(y)), fill=line, width=1)
        y, step = y + step, step * 1.35
    for _ in range(int(rng.integers(2, 7))):
        x0, y0 = rng.uniform(-20, _BG_W), rng.uniform(0, horizon * 0.8)
        w, h = rng.uniform(15, 90), rng.uniform(20, 120)
        colour = _muted(rng, 30, 220, 45)
        d.rectangle((x0, y0, x0 + w, min(y0 + h, horizon)), fill=colour)
    for _ in range(int(rng.integers(0, 4))):
        x0, r = rng.uniform(0, _BG_W), rng.uniform(15, 40)
        green = (int(rng.integers(20, 80)), int(rng.integers(80, 160)), int(rng.integers(20, 80)))
        d.ellipse((x0 - r, horizon - 1.6 * r, x0 + r, horizon + 0.2 * r), fill=green)
    for _ in range(int(rng.integers(0, 3))):
        x0 = rng.uniform(0, _BG_W)
        d.rectangle((x0, 0, x0 + rng.uniform(3, 10), horizon + 10), fill=(90, 90, 95))
    mottle = Image.fromarray(rng.integers(0, 255, (_BG_H // 20, _BG_W // 20), dtype=np.uint8))
    m = np.asarray(mottle.resize((_BG_W, _BG_H), Image.Resampling.BICUBIC), dtype=np.float32)
    arr = np.asarray(img, dtype=np.float32) * (
        np.float32(0.85) + m[..., None] * np.float32(0.3 / 255)
    )
    return np.clip(arr, 0, 255).astype(np.uint8)


def _background_window(camera: Camera, rng: np.random.Generator, vary: bool) -> Image.Image:
    """A crop-sized window of the camera's background; with ``vary``, per-image changes
    (mirroring, brightness, passing clutter) so that the scene alone does not name the camera."""
    bg = camera_background(camera.background_seed)
    oy = int(rng.integers(0, _BG_H - CROP_HEIGHT + 1))
    ox = int(rng.integers(0, _BG_W - CROP_WIDTH + 1))
    window = bg[oy : oy + CROP_HEIGHT, ox : ox + CROP_WIDTH]
    if not vary:
        return Image.fromarray(window).convert("RGBA")
    if rng.random() < 0.5:
        window = window[:, ::-1]
    gain = np.float32(rng.uniform(0.75, 1.25))
    img = Image.fromarray(np.clip(window * gain, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):
        x0, y0 = rng.uniform(-30, CROP_WIDTH), rng.uniform(0, CROP_HEIGHT)
        w, h = rng.uniform(10, 70), rng.uniform(10, 120)
        d.rectangle((x0, y0, x0 + w, y0 + h), fill=_muted(rng, 30, 220, 40))
    return img.convert("RGBA")


def _place_person(
    rgba: np.ndarray, parts: np.ndarray, frac: float, rng: np.random.Generator, jitter: bool
) -> tuple[Image.Image, np.ndarray]:
    """Scale the person canvas so the body is ``frac`` of the crop height and place it.

    Returns the person layer (RGBA, crop-sized) and the crop's part map.
    """
    k = frac * CROP_HEIGHT / (_BOTTOM - _TOP)
    size = (max(1, round(_CANVAS_W * k)), max(1, round(_CANVAS_H * k)))
    person = Image.fromarray(rgba).resize(size, Image.Resampling.BILINEAR)
    pmap = Image.fromarray(parts).resize(size, Image.Resampling.NEAREST)
    feet = CROP_HEIGHT * (rng.uniform(0.93, 1.04) if jitter else 0.97)
    x0 = round(CROP_WIDTH / 2 - size[0] / 2 + (rng.normal(0, 0.06 * CROP_WIDTH) if jitter else 0))
    y0 = round(feet - _BOTTOM * k)
    layer = Image.new("RGBA", (CROP_WIDTH, CROP_HEIGHT), (0, 0, 0, 0))
    layer.paste(person, (x0, y0))
    part_img = Image.new("L", (CROP_WIDTH, CROP_HEIGHT), 0)
    part_img.paste(
        pmap, (x0, y0), mask=person.getchannel("A").point(lambda a: 255 if a >= 128 else 0)
    )
    return layer, np.array(part_img)


def _add_occluder(image: np.ndarray, parts: np.ndarray, rng: np.random.Generator) -> None:
    """Cover part of the crop (in place) with a box from below or a band from one side."""
    colour = rng.integers(20, 230, 3).astype(np.uint8)
    if rng.random() < 0.5:  # a car, bench or bin in front of the legs
        top = int(CROP_HEIGHT * rng.uniform(0.6, 0.85))
        x0 = int(rng.integers(0, CROP_WIDTH // 2)) if rng.random() < 0.5 else 0
        x1 = CROP_WIDTH if x0 == 0 else int(rng.integers(x0 + CROP_WIDTH // 3, CROP_WIDTH + 1))
        region = (slice(top, CROP_HEIGHT), slice(x0, x1))
    else:  # a pole or a passer-by at one edge
        width = int(CROP_WIDTH * rng.uniform(0.15, 0.35))
        x0 = 0 if rng.random() < 0.5 else CROP_WIDTH - width
        region = (slice(0, CROP_HEIGHT), slice(x0, x0 + width))
    image[region] = colour
    image[region][::7] = (colour * 0.7).astype(np.uint8)  # some texture
    parts[region] = Part.OCCLUDER


def apply_camera(image: np.ndarray, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """The camera's rendition of a scene [H, W, 3] uint8: optics, then colour, then noise."""
    img = Image.fromarray(image)
    if camera.resolution < 1.0:
        small = (
            max(8, round(CROP_WIDTH * camera.resolution)),
            max(16, round(CROP_HEIGHT * camera.resolution)),
        )
        img = img.resize(small, Image.Resampling.BILINEAR).resize(
            img.size, Image.Resampling.BILINEAR
        )
    if camera.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(camera.blur))
    x = np.asarray(img, dtype=np.float32) * np.float32(1 / 255)
    exposure = 1.0 + rng.uniform(-camera.exposure_jitter, camera.exposure_jitter)
    x = x * (np.asarray(camera.gains, dtype=np.float32) * np.float32(exposure))
    x = np.clip(x, 0, 1)
    if camera.gamma != 1.0:
        x = x ** np.float32(camera.gamma)
    if camera.saturation != 1.0:
        grey = x.mean(axis=2, keepdims=True)
        x = grey + np.float32(camera.saturation) * (x - grey)
    if camera.noise > 0:
        x = x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(camera.noise)
    return np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)


def render_crop(
    identity: Identity,
    camera: Camera,
    rng: np.random.Generator,
    view: str | None = None,
    occlude: bool | None = None,
) -> Rendered:
    """One 256×128 crop of ``identity`` seen by ``camera``.

    ``view`` defaults to a draw from the camera's view probabilities and ``occlude`` to a
    draw with the camera's occlusion probability. Pose, scale, offset, background window
    and exposure vary per call; colours are exactly as drawn under :data:`NEUTRAL_CAMERA`.
    """
    if view is None:
        view = VIEWS[
            int(rng.choice(len(VIEWS), p=np.asarray(camera.view_probs) / sum(camera.view_probs)))
        ]
    rgba, parts = draw_person(identity, view, float(rng.random()))
    jitter = camera is not NEUTRAL_CAMERA
    frac = min(1.0, rng.uniform(*camera.scale) * (identity.height if jitter else 1.0))
    layer, crop_parts = _place_person(rgba, parts, frac, rng, jitter)
    scene = _background_window(camera, rng, vary=jitter)
    image = np.array(Image.alpha_composite(scene, layer).convert("RGB"))
    if occlude if occlude is not None else rng.random() < camera.occlusion:
        _add_occluder(image, crop_parts, rng)
    return Rendered(image=apply_camera(image, camera, rng), parts=crop_parts, view=view)
