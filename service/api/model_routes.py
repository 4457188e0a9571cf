"""Endpoints that only run the model: attributes and embeddings."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, File, UploadFile

from service.api.auth import require_read
from service.api.deps import EngineDep, RuntimeDep, SettingsDep, one_file
from service.api.errors import ERROR_RESPONSES
from service.api.schemas import (
    IMAGE_TYPES,
    AttributesResponse,
    Embedding,
    EmbedResponse,
    multipart,
)
from service.api.uploads import predictions, read_images

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1", tags=["model"], responses=ERROR_RESPONSES, dependencies=[Depends(require_read)]
)


@router.post(
    "/attributes",
    summary="Predict the pedestrian attributes of one image",
    dependencies=[Depends(one_file("image"))],
    openapi_extra=multipart(image=IMAGE_TYPES),
)
def attributes(
    image: Annotated[UploadFile, File(description="JPEG, PNG or WebP crop of one person")],
    runtime: RuntimeDep,
    engine: EngineDep,
    settings: SettingsDep,
) -> AttributesResponse:
    """Per attribute of the model's schema: the predicted class and its probability."""
    images = read_images(
        [image],
        settings.max_image_pixels,
        1,
        budget=settings.max_request_pixels,
        preprocess=engine.preprocess,
    )
    out = engine.infer(images)
    return AttributesResponse.model_validate(
        {"attributes": predictions(runtime.schema, out.attributes, 0)}
    )


@router.post(
    "/embed", summary="Embed one or more images", openapi_extra=multipart(images=IMAGE_TYPES)
)
def embed(
    images: Annotated[list[UploadFile], File(min_length=1, description="JPEG, PNG or WebP crops")],
    runtime: RuntimeDep,
    engine: EngineDep,
    settings: SettingsDep,
) -> EmbedResponse:
    """L2-normalised embeddings, one per image, in upload order (one batched model run)."""
    decoded = read_images(
        images,
        settings.max_image_pixels,
        settings.max_images_per_request,
        budget=settings.max_request_pixels,
        preprocess=engine.preprocess,
    )
    out = engine.infer(decoded)
    m = runtime.manifest
    return EmbedResponse(
        model=f"{m.name}/{m.version}",
        dim=runtime.dim,
        embeddings=[
            Embedding(filename=f.filename, embedding=e.tolist())
            for f, e in zip(images, out.embeddings, strict=True)
        ],
    )
