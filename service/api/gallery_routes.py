"""Gallery endpoints: add, get and delete items, search, stats, list, delete galleries."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Body, Depends, File, Form, Header, Path, Query, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from PIL import Image
from pydantic import TypeAdapter, ValidationError

from reidcore.attributes import AttributeSchema
from reidcore.preprocess import PreprocessConfig
from reidcore.query_tricks import Expansion, QueryTricks
from service.api.auth import require_read, require_write
from service.api.deps import (
    EngineDep,
    GalleriesDep,
    GalleryName,
    JobsDep,
    RuntimeDep,
    SettingsDep,
    one_file,
)
from service.api.errors import ERROR_RESPONSES
from service.api.job_routes import job_response
from service.api.schemas import (
    IMAGE_TYPES,
    AddedItem,
    AddItemsResponse,
    GalleriesResponse,
    GalleryStatsResponse,
    GallerySummary,
    ItemInput,
    ItemResponse,
    JobResponse,
    MatchResponse,
    ReindexRequest,
    SearchParams,
    SearchResponse,
    from_epoch,
    from_epoch_or_unknown,
    links,
    multipart,
    to_epoch,
)
from service.api.uploads import predictions, read_images
from service.batching import InferenceEngine
from service.errors import InvalidInput, LocalDistanceUnavailable
from service.gallery import GalleryManager, Item, Match, NewItem, SearchFilter
from service.gallery.attribute_search import matching_ids
from service.gallery.blobs import crop_gallery
from service.gallery.crops import Crop, make_crop
from service.gallery.local_search import LocalParams
from service.gallery.query_tricks import TrickParams
from service.gallery.trajectory import time_kind
from service.images import sniff_format
from service.settings import Settings

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/galleries", tags=["galleries"], responses=ERROR_RESPONSES)

READ = [Depends(require_read)]
WRITE = [Depends(require_write)]

ItemId = Annotated[
    int, Path(ge=0, le=2**63 - 1, description="Item id returned when the item was added")
]
"""Ids are SQLite integers: larger ones cannot exist (422, never an overflow)."""
ITEMS_ADAPTER = TypeAdapter(list[ItemInput])


def item_response(item: Item) -> ItemResponse:
    return ItemResponse.model_validate(
        {
            "id": item.id,
            "external_id": item.external_id,
            "camera": item.camera,
            "timestamp": from_epoch_or_unknown(item.timestamp),
            "time_kind": time_kind(item.timestamp, item.metadata),
            "metadata": item.metadata,
            "attributes": item.attributes,
            "image_url": image_url(item),
        }
    )


def image_url(item: Item) -> str | None:
    """Where the item's crop is served; None when it has none. A crop's key starts with its
    gallery's name (:func:`service.gallery.blobs.new_key`), kept through a re-index."""
    if item.crop is None:
        return None
    return f"/v1/galleries/{crop_gallery(item.crop)}/items/{item.id}/image"


def _epoch_or_unknown(t: dt.datetime | None) -> float:
    """Epoch seconds of an item's time; NaN when it has none (unknown)."""
    return math.nan if t is None else to_epoch(t)


def _items_path(loc: tuple[int | str, ...]) -> str:
    """``items[0].timestamp`` from pydantic's ``(0, "timestamp")``."""
    return "items" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def parse_items(raw: str, count: int, settings: Settings) -> list[ItemInput]:
    """The ``items`` form field: a JSON array with one entry per uploaded image."""
    try:
        items = ITEMS_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors()
        if any(e["type"] == "json_invalid" for e in errors):  # not JSON at all: 400
            raise InvalidInput(f"invalid 'items' field: {errors[0]['msg']}") from None
        # JSON, but a value is wrong (e.g. a timestamp out of range): 422 naming the field,
        # as for every other form field.
        raise RequestValidationError(
            [{**e, "loc": ("body", _items_path(e["loc"]))} for e in errors]
        ) from None
    if len(items) != count:
        raise InvalidInput(f"'items' has {len(items)} entries but {count} images were uploaded")
    for i, it in enumerate(items):
        size = len(json.dumps(it.metadata))
        if size > settings.max_metadata_bytes:
            raise InvalidInput(
                f"items[{i}].metadata is {size} bytes of JSON; the limit is {settings.max_metadata_bytes}"
            )
    return items


@router.get("", summary="List galleries", dependencies=READ)
def list_galleries(galleries: GalleriesDep) -> GalleriesResponse:
    """Every gallery of the data directory, with its state."""
    return GalleriesResponse(galleries=[GallerySummary(**s.__dict__) for s in galleries.statuses()])


ITEM_LINK = {"gallery": "$request.path.gallery", "item_id": "$response.body#/items/0/id"}


@router.post(
    "/{gallery}/items",
    summary="Add images to a gallery (created on first use)",
    dependencies=WRITE,
    openapi_extra=multipart(images=IMAGE_TYPES),
    responses=links(200, "The items, in upload order", get_item=ITEM_LINK, delete_item=ITEM_LINK),
)
def add_items(
    gallery: GalleryName,
    images: Annotated[list[UploadFile], File(min_length=1, description="JPEG, PNG or WebP crops")],
    items: Annotated[
        str,
        Form(
            description='JSON array, one entry per image: {"camera", "timestamp", '
            '"external_id"?, "metadata"?}'
        ),
    ],
    runtime: RuntimeDep,
    engine: EngineDep,
    galleries: GalleriesDep,
    settings: SettingsDep,
) -> AddItemsResponse:
    """Embed and store the images durably; idempotent by external id."""
    specs = parse_items(items, len(images), settings)
    g = galleries.get_or_create(gallery)
    known = g.find_external([s.external_id for s in specs if s.external_id])
    todo = [i for i, s in enumerate(specs) if s.external_id not in known]
    decoded = read_images(
        [images[i] for i in todo],
        settings.max_image_pixels,
        settings.max_images_per_request,
        budget=settings.max_request_pixels,
        preprocess=engine.preprocess,
    )
    out = engine.infer(decoded)
    crops = upload_crops([images[i] for i in todo], decoded, settings, engine.preprocess)
    new = [
        NewItem(
            camera=specs[i].camera,
            timestamp=_epoch_or_unknown(specs[i].timestamp),
            external_id=specs[i].external_id,
            metadata=specs[i].metadata,
            attributes=predictions(runtime.schema, out.attributes, row),
            local=None if out.local is None else out.local[row],
        )
        for row, i in enumerate(todo)
    ]
    added = iter(g.add(new, out.embeddings, crops))
    results = [
        AddedItem(id=known[s.external_id], external_id=s.external_id, created=False)
        if s.external_id in known
        else AddedItem(**next(added).__dict__)
        for s in specs
    ]
    return AddItemsResponse(gallery=gallery, items=results)


@router.get(
    "/{gallery}/items/{item_id}", summary="Get one item", dependencies=READ, operation_id="get_item"
)
def get_item(gallery: GalleryName, item_id: ItemId, galleries: GalleriesDep) -> ItemResponse:
    return item_response(galleries.get(gallery).get(item_id))


@router.delete(
    "/{gallery}/items/{item_id}",
    status_code=204,
    summary="Delete one item",
    dependencies=WRITE,
    operation_id="delete_item",
)
def delete_item(gallery: GalleryName, item_id: ItemId, galleries: GalleriesDep) -> None:
    galleries.get(gallery).delete(item_id)


def upload_crops(
    files: list[UploadFile],
    decoded: list[Image.Image],
    settings: Settings,
    preprocess: PreprocessConfig,
) -> list[Crop | None] | None:
    """The crops kept with these uploads (None when crops are not kept)."""
    config = settings.crop_config()
    if config is None:
        return None
    size = (preprocess.width, preprocess.height)
    crops: list[Crop | None] = []
    for f, image in zip(files, decoded, strict=True):
        original = None
        if config.keep_original:
            f.file.seek(0)
            original = f.file.read()
        crops.append(make_crop(image, original, config, size))
    return crops


@router.get(
    "/{gallery}/items/{item_id}/image",
    summary="The stored crop of one item",
    dependencies=READ,
    operation_id="get_item_image",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "The crop (JPEG thumbnail)"},
        304: {"description": "Not modified: the If-None-Match ETag is current"},
    },
)
def get_item_image(
    gallery: GalleryName,
    item_id: ItemId,
    galleries: GalleriesDep,
    settings: SettingsDep,
    original: Annotated[
        bool, Query(description="The original upload, when the service keeps originals")
    ] = False,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The item's crop with an ETag and cache headers (304 when If-None-Match matches); 404
    with a reason for items added before crops were kept."""
    g = galleries.get(gallery)
    key = g.crop_key(item_id, original)
    etag = f'"{key.rsplit("/", 1)[-1]}"'  # a key's bytes never change
    headers = {"ETag": etag, "Cache-Control": f"private, max-age={settings.crop_cache_max_age_s}"}
    if if_none_match is not None and {etag, "*"} & {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    _, data = g.read_crop(item_id, original)
    media = {"PNG": "image/png", "WebP": "image/webp"}.get(sniff_format(data) or "", "image/jpeg")
    return Response(data, media_type=media, headers=headers)


@router.post(
    "/{gallery}/reindex",
    status_code=202,
    summary="Re-embed every stored crop with the served model (a job)",
    dependencies=WRITE,
)
def reindex_gallery(
    gallery: GalleryName,
    jobs: JobsDep,
    body: Annotated[ReindexRequest | None, Body()] = None,
) -> JobResponse:
    """A job (GET/DELETE /v1/jobs/{id}: progress, cancel; resumed after a restart) that
    re-embeds every stored crop with the model now served into a new version of the gallery,
    which replaces the old one only when complete. 409 when the gallery has no stored crops
    (built before crops were kept) or is already being re-indexed. Item ids change;
    external ids, cameras, times, metadata and crops stay."""
    allow = body.allow_partial if body is not None else False
    return job_response(jobs.submit_reindex(gallery, allow))


@router.get("/{gallery}", summary="Gallery statistics", dependencies=READ)
def gallery_stats(gallery: GalleryName, galleries: GalleriesDep) -> GalleryStatsResponse:
    s = galleries.get(gallery).stats()
    return GalleryStatsResponse(
        name=s.name,
        items=s.items,
        cameras=s.cameras,
        dim=s.dim,
        model_id=s.model_id,
        index=s.engine,
        time_min=None if s.time_min is None else from_epoch(s.time_min),
        time_max=None if s.time_max is None else from_epoch(s.time_max),
    )


@router.delete(
    "/{gallery}", status_code=204, summary="Delete a gallery and its files", dependencies=WRITE
)
def delete_gallery(gallery: GalleryName, galleries: GalleriesDep) -> None:
    galleries.delete(gallery)


@router.post(
    "/{gallery}/search",
    summary="Find the k best matches of one image",
    dependencies=[*READ, Depends(one_file("image"))],
    openapi_extra=multipart(image=IMAGE_TYPES),
)
def search(
    gallery: GalleryName,
    image: Annotated[UploadFile, File(description="JPEG, PNG or WebP crop of the query person")],
    params: Annotated[SearchParams, Form()],
    engine: EngineDep,
    galleries: GalleriesDep,
    settings: SettingsDep,
    runtime: RuntimeDep,
) -> SearchResponse:
    """Top-k matches, exact under the filters (and the predicted ``attributes``);
    optionally k-reciprocal re-ranked."""
    matches = find_matches(gallery, image, params, engine, galleries, settings, runtime.schema)
    return SearchResponse(
        gallery=gallery,
        reranked=params.rerank,
        matches=[
            MatchResponse(item=item_response(m.item), score=m.score, distance=m.distance)
            for m in matches
        ],
    )


def find_matches(
    gallery: str,
    image: UploadFile,
    params: SearchParams,
    engine: InferenceEngine,
    galleries: GalleryManager,
    settings: Settings,
    schema: AttributeSchema,
) -> list[Match]:
    """The matches of an image search (also the trajectory view's)."""
    if params.k > settings.max_k:
        raise InvalidInput(f"k={params.k} is over the limit of {settings.max_k}")
    g = galleries.get(gallery)  # 404/409 before spending time on the model
    filt = search_filter(params)
    tricks = trick_params(params, settings)  # 422 before spending time on the model
    wanted = params.attributes
    among = g.run(lambda s: matching_ids(s, schema, wanted, filt)) if wanted else None
    out = engine.infer(
        read_images(
            [image],
            settings.max_image_pixels,
            1,
            budget=settings.max_request_pixels,
            preprocess=engine.preprocess,
        )
    )
    rerank = settings.rerank_params() if params.rerank else None
    local = local_params(out.local, settings) if params.local_distance else None
    return g.search(out.embeddings[0], params.k, filt, rerank, among, tricks, local)


def local_params(query_local: np.ndarray | None, settings: Settings) -> LocalParams:
    """A ``local_distance`` search of a query with these stripe features [1, H, c]."""
    if query_local is None:
        raise LocalDistanceUnavailable(
            "local_distance needs a model with a 'local' output (AlignedReID stripe features: "
            "export it with --include-local); the served model has none"
        )
    return LocalParams(
        query_local[0], settings.local_distance_weight, settings.local_distance_shortlist
    )


def trick_params(params: SearchParams, settings: Settings) -> TrickParams | None:
    """The query-side tricks a search asks for (None: none), within the settings' limits."""
    for name in ("qe_n", "dba_n"):
        n = getattr(params, name)
        if n is not None and n > settings.query_tricks_max_n:
            raise InvalidInput(f"{name}={n} is over the limit of {settings.query_tricks_max_n}")
    tricks = QueryTricks(
        qe=None if params.qe_n is None else Expansion(params.qe_n, params.qe_alpha),
        dba=None if params.dba_n is None else Expansion(params.dba_n, params.dba_alpha),
        camera_norm=params.camera_norm,
    )
    if not tricks.any():
        return None
    if params.rerank:
        raise InvalidInput("rerank cannot be combined with qe_n, dba_n or camera_norm")
    return TrickParams(tricks, params.query_camera, settings.query_tricks_shortlist)


def search_filter(params: SearchParams) -> SearchFilter:
    """The store's filter from the request's parameters."""
    if params.time_from and params.time_to and params.time_from >= params.time_to:
        raise InvalidInput(
            f"time_from ({params.time_from.isoformat()}) must be before time_to ({params.time_to.isoformat()})"
        )
    return SearchFilter(
        cameras=None if params.cameras is None else frozenset(params.cameras),
        exclude_cameras=frozenset(params.exclude_cameras or ()),
        time_from=None if params.time_from is None else params.time_from.timestamp(),
        time_to=None if params.time_to is None else params.time_to.timestamp(),
        min_score=params.min_score,
    )
