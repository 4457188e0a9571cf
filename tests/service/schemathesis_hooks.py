"""Schemathesis hooks of the contract test: what a valid image or archive is.

The OpenAPI document says which media types each file field takes (``encoding.contentType``);
these strategies give Schemathesis real files of those types to send, so that the requests it
calls valid are valid. Loaded by ``SCHEMATHESIS_HOOKS=tests.service.schemathesis_hooks``.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import tarfile
import zipfile
from typing import Any

import httpx
import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis.core.parameters import ParameterLocation


def _image(seed: int, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(8 + seed % 24, 4 + seed % 12, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def _tar(seed: int) -> bytes:
    """A tar of one crop named like Market-1501 (person, camera, frame)."""
    data = _image(seed, "PNG")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(f"{seed % 1000:04d}_c1s1_{seed:06d}_00.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(seed: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{seed % 1000:04d}_c2s1_{seed:06d}_00.png", _image(seed, "PNG"))
    return buf.getvalue()


SEEDS = st.integers(min_value=0, max_value=10_000)
for media_type, fmt in (("image/png", "PNG"), ("image/jpeg", "JPEG"), ("image/webp", "WEBP")):
    schemathesis.openapi.media_type(media_type, SEEDS.map(lambda s, f=fmt: _image(s, f)))
schemathesis.openapi.media_type("application/x-tar", SEEDS.map(_tar))
schemathesis.openapi.media_type("application/zip", SEEDS.map(_zip))


@schemathesis.hook("map_case").apply_to(method="POST", path="/v1/galleries/{gallery}/items")
def one_item_per_image(ctx: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """``items`` must hold one entry per uploaded image, a rule JSON Schema cannot state:
    valid (positive) cases get a valid ``items`` of the right length."""
    body = _positive_form(case)
    if body is None or "images" not in body:
        return case
    images = body["images"]
    count = len(images) if isinstance(images, list) else 1
    body["items"] = json.dumps(
        [{"camera": f"cam{i % 3}", "timestamp": 1_700_000_000 + i} for i in range(count)]
    )
    return case


def _positive_form(case: schemathesis.Case) -> dict[str, Any] | None:
    """The multipart fields of a case generated as valid (None for invalid ones)."""
    body = getattr(case.body, "body", case.body)
    meta = case.meta
    negative = meta is not None and (
        meta.generation.mode.is_negative or meta.is_negative_at(ParameterLocation.BODY)
    )
    return body if isinstance(body, dict) and not negative else None


@schemathesis.hook("map_case").apply_to(method="POST", path_regex=r"/(embed|items)$")
def images_as_a_list(ctx: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """Schemathesis fills an array field that has an encoding with ONE generated file and
    then sends it without a filename (so as a plain field): send it as a list of one file."""
    body = _positive_form(case)
    if body is not None and isinstance(body.get("images"), bytes):
        body["images"] = [body["images"]]
    return case


@schemathesis.hook("map_case").apply_to(method="POST", path="/v1/galleries/{gallery}/jobs")
def coherent_naming(ctx: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """time=name goes with a strftime pattern and the other sources with none, a rule across
    fields that JSON Schema cannot state: valid cases keep to it."""
    body = _positive_form(case)
    if body is not None:
        body.pop("time_regex", None)
        if body.get("time") == "name":
            body["time_format"] = "%Y%m%d"
        else:
            body.pop("time_format", None)
    return case


@schemathesis.hook("map_case").apply_to(
    method="POST", path_regex=r"/(search|trajectory|attribute-search)$"
)
def time_range_in_order(
    ctx: schemathesis.HookContext, case: schemathesis.Case
) -> schemathesis.Case:
    """time_from must come before time_to (400 otherwise): valid cases keep them in order."""
    body = _positive_form(case)
    if body is None or not body.get("time_from") or not body.get("time_to"):
        return case
    try:
        start, end = (dt.datetime.fromisoformat(body[k]) for k in ("time_from", "time_to"))
        if start >= end:
            body["time_from"], body["time_to"] = body["time_to"], body["time_from"]
            if start == end:
                del body["time_to"]
    except (TypeError, ValueError):  # not times: the server says so (a negative case)
        pass
    return case


@functools.cache
def _wanted(base_url: str) -> dict[str, str]:
    """One valid wanted attribute value of the served model (its first attribute and class)."""
    schema = httpx.get(f"{base_url.rstrip('/')}/v1/attribute-schema", timeout=30).json()
    name, values = next(iter(schema["attributes"].items()))
    return {name: values[0]}


@schemathesis.hook("map_case").apply_to(
    method="POST", path_regex=r"/(search|trajectory|attribute-search)$"
)
def known_attributes(ctx: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """Attribute names and values are the served model's (``GET /v1/attribute-schema``),
    which the static schema cannot list: valid cases ask for one that exists."""
    if case.operation.path.endswith("attribute-search"):
        negative = case.meta is not None and case.meta.generation.mode.is_negative
        if isinstance(case.body, dict) and not negative:
            case.body["attributes"] = _wanted(case.operation.schema.get_base_url())
        return case
    body = _positive_form(case)
    if body is not None and body.get("attributes") is not None:
        body["attributes"] = json.dumps(_wanted(case.operation.schema.get_base_url()))
    return case


@schemathesis.hook("map_case").apply_to(method="POST", path_regex=r"/(search|trajectory)$")
def rerank_alone(ctx: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """rerank does not combine with qe_n, dba_n or camera_norm (400): valid cases keep to it."""
    body = _positive_form(case)
    tricks = ("qe_n", "dba_n", "camera_norm")
    if (
        body is not None
        and body.get("rerank")
        and any(body.get(t) not in (None, False) for t in tricks)
    ):
        body["rerank"] = False
    return case


@schemathesis.hook("map_case").apply_to(method="POST", path_regex=r"/(search|trajectory)$")
def local_distance_off(ctx: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """local_distance needs a model with a ``local`` output, which the contract test's model
    lacks (409 otherwise, a rule of the served model, not of the schema): valid cases leave it
    off."""
    body = _positive_form(case)
    if body is not None and body.get("local_distance"):
        body["local_distance"] = False
    return case
