"""Search by description and the trajectory view of an image search.

- ``GET /v1/attribute-schema``: the attribute names and values a search may use;
- ``POST /v1/galleries/{g}/attribute-search``: items ranked by the joint probability of
  wanted attribute values (:mod:`service.gallery.attribute_search`);
- ``POST /v1/galleries/{g}/trajectory``: an image search's matches above a score as lanes per
  camera and a path in time (:mod:`service.gallery.trajectory`). Its own endpoint (not an
  option of ``/search``) so that the search answer keeps one shape.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from service.api.auth import require_read
from service.api.deps import EngineDep, GalleriesDep, GalleryName, RuntimeDep, SettingsDep, one_file
from service.api.errors import ERROR_RESPONSES
from service.api.gallery_routes import find_matches, item_response, search_filter
from service.api.schemas import IMAGE_TYPES, MatchResponse, from_epoch, multipart
from service.api.view_schemas import (
    AttributeMatch,
    AttributeSchemaResponse,
    AttributeSearchRequest,
    AttributeSearchResponse,
    Lane,
    PathStep,
    Sighting,
    TimeView,
    TrajectoryParams,
    TrajectoryResponse,
)
from service.errors import InvalidInput
from service.gallery.attribute_search import Layout, attribute_search
from service.gallery.trajectory import Sighting as SightingData
from service.gallery.trajectory import build_trajectory, format_offset

router = APIRouter(
    prefix="/v1",
    tags=["galleries"],
    responses=ERROR_RESPONSES,
    dependencies=[Depends(require_read)],
)


@router.get("/attribute-schema", summary="Attribute names and values a search may use")
def attribute_schema(runtime: RuntimeDep) -> AttributeSchemaResponse:
    layout = Layout.of(runtime.schema)
    groups = {g: [v for v, _ in m] for g, m in layout.groups().items()}
    return AttributeSchemaResponse(
        attributes={a.name: list(a.classes) for a in runtime.schema}, groups=groups
    )


@router.post(
    "/galleries/{gallery}/attribute-search",
    summary="Find the items most likely to have wanted attribute values",
)
def search_by_attributes(
    gallery: GalleryName,
    body: AttributeSearchRequest,
    runtime: RuntimeDep,
    galleries: GalleriesDep,
    settings: SettingsDep,
) -> AttributeSearchResponse:
    """Items ranked by the joint probability of the wanted values under their stored
    predictions (ties: lower id first), exact under the camera/time filters."""
    if body.k > settings.max_k:
        raise InvalidInput(f"k={body.k} is over the limit of {settings.max_k}")
    filt = search_filter(body.search_params())
    g = galleries.get(gallery)
    found = g.run(
        lambda s: attribute_search(
            s, runtime.schema, body.attributes, body.k, filt, body.min_probability
        )
    )
    items = g.run(lambda s: s.fetch(found.ids.tolist()))
    return AttributeSearchResponse(
        gallery=gallery,
        attributes=body.attributes,
        matched=found.matched,
        matches=[
            AttributeMatch(item=item_response(items[i]), probability=p)
            for i, p in zip(found.ids.tolist(), found.probabilities.tolist(), strict=True)
            if i in items  # deleted between the ranking and the fetch
        ],
    )


@router.post(
    "/galleries/{gallery}/trajectory",
    summary="Follow the person of one image across cameras over time",
    dependencies=[Depends(one_file("image"))],
    openapi_extra=multipart(image=IMAGE_TYPES),
)
def trajectory(
    gallery: GalleryName,
    image: Annotated[UploadFile, File(description="JPEG, PNG or WebP crop of the query person")],
    params: Annotated[TrajectoryParams, Form()],
    engine: EngineDep,
    galleries: GalleriesDep,
    settings: SettingsDep,
    runtime: RuntimeDep,
) -> TrajectoryResponse:
    """The image search's matches scoring at least ``min_score`` (the service's
    ``trajectory_min_score`` when absent): one lane per camera ordered by time, the path
    across cameras with the gaps between consecutive sightings, unknown times apart."""
    if params.min_score is None:
        params = params.model_copy(update={"min_score": settings.trajectory_min_score})
    min_score = float(params.min_score or 0.0)
    matches = find_matches(gallery, image, params, engine, galleries, settings, runtime.schema)
    t = build_trajectory(matches, min_score)
    return TrajectoryResponse(
        gallery=gallery,
        reranked=params.rerank,
        min_score=min_score,
        lanes=[
            Lane(camera=lane.camera, sightings=[_sighting(s) for s in lane.sightings])
            for lane in t.lanes
        ],
        path=[_step(s, t.path[i - 1] if i else None) for i, s in enumerate(t.path)],
        unknown_time=[
            MatchResponse(item=item_response(m.item), score=m.score, distance=m.distance)
            for m in t.unknown_time
        ],
    )


def _time(s: SightingData) -> TimeView:
    text = (
        format_offset(s.seconds)
        if s.kind == "offset"
        else from_epoch(s.seconds).isoformat().replace("+00:00", "Z")
    )
    return TimeView(kind=s.kind, seconds=s.seconds, text=text)


def _sighting(s: SightingData) -> Sighting:
    m = s.match
    return Sighting(
        item=item_response(m.item), score=m.score, distance=m.distance, time=_time(s), gap_s=s.gap_s
    )


def _step(s: SightingData, prev: SightingData | None) -> PathStep:
    return PathStep(
        item_id=s.match.item.id,
        camera=s.match.item.camera,
        score=s.match.score,
        time=_time(s),
        gap_s=s.gap_s,
        camera_changed=prev is not None and prev.match.item.camera != s.match.item.camera,
    )
