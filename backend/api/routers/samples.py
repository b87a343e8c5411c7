from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, Response

from backend import datasets as store
from backend.api.deps import Id, SessionDep, SettingsDep
from backend.images import thumbnail
from backend.models import Dataset
from backend.schemas import SampleOut

router = APIRouter(tags=["samples"])


@router.get("/samples/{sample_id}", response_model=SampleOut)
def get_sample(sample_id: Id, session: SessionDep) -> SampleOut:
    return store.samples_out(session, [store.get_sample(session, sample_id)])[0]


@router.get(
    "/samples/{sample_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}}, 403: {}, 404: {}},
)
def get_image(
    sample_id: Id,
    session: SessionDep,
    settings: SettingsDep,
    index: Annotated[int, Query(ge=0)] = 0,
    max_side: Annotated[int | None, Query(ge=16, le=2048)] = None,
) -> Response:
    """The sample's image (the `index`-th of several), served only from inside the image root."""
    sample = store.get_sample(session, sample_id)
    images = sample.images
    if not images:
        raise HTTPException(404, f"sample {sample_id} has no image (text-only)")
    if index >= len(images):
        raise HTTPException(404, f"sample {sample_id} has {len(images)} image(s); index {index} is out of range")
    dataset = session.get(Dataset, sample.dataset_id)
    if dataset is None or not dataset.image_root:
        raise HTTPException(404, f"sample {sample_id}: its dataset has no image root")
    path = store.resolve_inside(Path(dataset.image_root), images[index])
    if not path.is_file():
        raise HTTPException(404, f"image {images[index]!r} of sample {sample_id} is missing")
    if max_side is None:
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=3600"})
    try:
        data = thumbnail(path, max_side, settings.data_dir / "thumbs")
    except ValueError as exc:
        raise HTTPException(422, f"image {images[index]!r} of sample {sample_id}: {exc}") from None
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
