"""Bodies of the search-by-description and trajectory endpoints (:mod:`service.api.view_routes`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from service.api.schemas import (
    ISO_TIME,
    CameraId,
    ItemResponse,
    MatchResponse,
    SearchParams,
    WantedAttributes,
)


class AttributeSchemaResponse(BaseModel):
    """What an attribute search may ask for."""

    attributes: dict[str, list[str]]
    """Every attribute of the served model -> its values (classes)."""
    groups: dict[str, list[str]]
    """Colour groups of binary attributes -> their values: ``{"upcolor": "red"}`` stands for
    ``{"upred": "yes"}`` (APR's schema); empty when the model has none."""


class AttributeSearchRequest(BaseModel):
    """Wanted attribute values, with the filters of image search."""

    model_config = ConfigDict(extra="forbid")

    attributes: WantedAttributes
    """Attribute (or colour group) name -> wanted value, e.g.
    ``{"gender": "female", "backpack": "yes", "upcolor": "red"}``."""
    k: int = Field(default=10, ge=1)
    """Number of items."""
    min_probability: float = Field(default=0.0, ge=0.0, le=1.0)
    """Smallest joint probability of the wanted values an item may have."""
    cameras: list[CameraId] | None = None
    """Only these cameras."""
    exclude_cameras: list[CameraId] | None = None
    """Never these cameras."""
    time_from: Annotated[AwareDatetime | None, ISO_TIME] = None
    """Earliest timestamp, inclusive (ISO 8601 with time zone)."""
    time_to: Annotated[AwareDatetime | None, ISO_TIME] = None
    """Latest timestamp, exclusive (ISO 8601 with time zone)."""

    def search_params(self) -> SearchParams:
        """The same filters as image search parameters (one place checks them)."""
        return SearchParams.model_validate(
            self.model_dump(include={"k", "cameras", "exclude_cameras", "time_from", "time_to"})
        )


class AttributeMatch(BaseModel):
    """One item, most probable first."""

    item: ItemResponse
    probability: float
    """Joint probability of the wanted values under the item's stored predictions (the
    product over the wanted attributes)."""


class AttributeSearchResponse(BaseModel):
    gallery: str
    attributes: dict[str, str]
    """The wanted values, as asked."""
    matched: int
    """Items at or above ``min_probability`` under the filters (``matches`` is the best k)."""
    matches: list[AttributeMatch]


class TrajectoryParams(SearchParams):
    """Image search options (multipart form fields beside the image); ``min_score`` is the
    threshold of the trajectory (the service's ``trajectory_min_score`` when absent)."""

    k: int = Field(default=100, ge=1)
    """Number of best matches considered."""


class TimeView(BaseModel):
    """A time as recorded."""

    kind: Literal["datetime", "offset"]
    """``datetime``: wall-clock time; ``offset``: seconds from the start of a recording
    (dataset frame times)."""
    seconds: float
    """Epoch seconds (datetime) or seconds from the recording start (offset)."""
    text: str
    """ISO 8601 UTC (datetime) or ``+H:MM:SS.s`` (offset)."""


class Sighting(BaseModel):
    """One match on a camera's lane."""

    item: ItemResponse
    score: float
    distance: float
    time: TimeView
    gap_s: float | None
    """Seconds since the previous sighting on this camera (null: first, or other time kind)."""


class Lane(BaseModel):
    """One camera's sightings, by time."""

    camera: str
    sightings: list[Sighting]


class PathStep(BaseModel):
    """One sighting on the path across cameras."""

    item_id: int
    camera: str
    score: float
    time: TimeView
    gap_s: float | None
    """Seconds since the previous step (null: first, or other time kind)."""
    camera_changed: bool
    """True when the previous step was on another camera."""


class TrajectoryResponse(BaseModel):
    """The matches at or above ``min_score`` in time, per camera and across cameras."""

    gallery: str
    reranked: bool
    min_score: float
    lanes: list[Lane]
    """One per camera, in the order of their first sighting."""
    path: list[PathStep]
    """Every timed sighting in time order (datetimes after offsets when both occur)."""
    unknown_time: list[MatchResponse]
    """Matches at or above ``min_score`` whose time is unknown."""
