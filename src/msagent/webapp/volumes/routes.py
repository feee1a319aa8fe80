"""Routes for the web page's images and volumes: stored images as PNG, NIfTI/DICOM uploads,
windowed slices, and masks exported as NIfTI or DICOM SEG.

``install(app)`` adds the routes and a :class:`~.store.VolumeStore` at
``app.state.msagent_volumes``. Every route needs the API key when the server has one.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, FastAPI, File, Query, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

from msagent.io.wire import ImageTooLarge, png_bytes
from msagent.server.context import ServerContext, context, require_api_key
from msagent.server.schemas import RLE, ImageInfo
from msagent.server.services import ERRORS, attachment, read_upload
from msagent.webapp.volumes.store import (
    EXPORT_FORMATS,
    Plane,
    StoredVolume,
    VolumeStore,
    export_mask,
    mask_from_rle,
    read_volume_upload,
    volume_store,
)

router = APIRouter(prefix="/v1", tags=["web page"], dependencies=[Depends(require_api_key)],
                   responses=ERRORS)
PNG = {200: {"description": "a PNG image", "content": {"image/png": {}}}}


class VolumeInfo(BaseModel):
    volume_id: str
    name: str
    kind: Literal["nifti", "dicom"]
    shape: list[int]
    modality: str
    spacing: list[float] = Field(description="voxel size in mm along i, j, k")
    slices: dict[str, int] = Field(description="number of slices per plane")
    window: list[float] = Field(description="the default window [width, level]")
    window_source: Literal["dicom", "percentile"]
    presets: dict[str, list[float]] = Field(description="CT window presets [width, level]")
    exports: list[str] = Field(description="mask formats this volume can be exported to")


class SliceRequest(BaseModel):
    plane: Plane = "axial"
    index: int = Field(ge=0)
    window: str | None = Field(None, max_length=64,
                               description="'auto' or empty (the default), a preset, or 'W/L'")


class SliceMask(BaseModel):
    index: int = Field(ge=0)
    mask: RLE


class ExportRequest(BaseModel):
    plane: Plane = "axial"
    slices: list[SliceMask] = Field(min_length=1, description=(
        "one mask per segmented slice (the rest stay 0); the request-body limit bounds the list"))
    format: Literal["nifti", "dicom-seg"] = "nifti"
    label: str = Field("target", max_length=64, description="segment label (DICOM SEG)")


def install(app: FastAPI) -> None:
    """Add these routes to ``app`` with a fresh volume store (``--max-volumes``, counting the
    volumes that volume sessions hold: install the session routes too)."""
    def held() -> list:
        sessions = getattr(app.state, "msagent_volume_sessions", None)
        return [] if sessions is None else sessions.held()

    app.state.msagent_volumes = VolumeStore(app.state.msagent.config.max_volumes, held=held)
    app.include_router(router)


@router.get("/images/{image_id}/png", responses=PNG, response_class=Response)
async def image_png(image_id: str, ctx: ServerContext = Depends(context)) -> Response:
    """A stored image as the backbone sees it (H×W×3 uint8 RGB), losslessly as PNG."""
    image = ctx.engine.images.get(image_id)
    data = await asyncio.to_thread(png_bytes, image)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/volumes", response_model=VolumeInfo, status_code=201)
async def upload_volume(files: list[UploadFile] = File(description=(
        "one .nii/.nii.gz file, or the .dcm files of one DICOM series (or a .zip of them)")),
        ctx: ServerContext = Depends(context),
        store: VolumeStore = Depends(volume_store)) -> VolumeInfo:
    """Read a NIfTI file or a DICOM series and keep it for slicing and mask export (429 when
    every volume the server keeps in memory is held by a volume session)."""
    store.check_room()  # before reading it
    items, total = [], 0
    for upload in files:
        data = await read_upload(upload, ctx)
        total += len(data)
        if total > ctx.config.max_upload_bytes:
            raise ImageTooLarge(f"the files are over this server's limit of "
                                f"{ctx.config.max_upload_bytes:,} bytes")
        items.append((upload.filename or "upload", data))
    stored = await asyncio.to_thread(read_volume_upload, items, ctx.config.max_upload_bytes * 4,
                                     ctx.config.max_voxels)
    store.put(stored)
    return VolumeInfo(**stored.info())


@router.get("/volumes/{volume_id}", response_model=VolumeInfo)
async def volume_info(volume_id: str, store: VolumeStore = Depends(volume_store)) -> VolumeInfo:
    return VolumeInfo(**store.get(volume_id).info())


@router.delete("/volumes/{volume_id}", status_code=204, response_class=Response)
async def delete_volume(volume_id: str, store: VolumeStore = Depends(volume_store)) -> Response:
    store.delete(volume_id)
    return Response(status_code=204)


@router.get("/volumes/{volume_id}/slice.png", responses=PNG, response_class=Response)
async def slice_png(volume_id: str, plane: Plane = Query("axial"), index: int = Query(ge=0),
                    window: str | None = Query(None, max_length=64),
                    store: VolumeStore = Depends(volume_store)) -> Response:
    """Slice ``index`` of ``plane`` as displayed, windowed, as an 8-bit gray PNG."""
    stored = store.get(volume_id)
    gray = await asyncio.to_thread(stored.slice_gray, plane, index, window)
    return Response(await asyncio.to_thread(png_bytes, gray), media_type="image/png",
                    headers={"X-Width": str(gray.shape[1]), "X-Height": str(gray.shape[0])})


@router.post("/volumes/{volume_id}/slice", response_model=ImageInfo)
async def store_slice(volume_id: str, body: SliceRequest, ctx: ServerContext = Depends(context),
                      store: VolumeStore = Depends(volume_store)) -> ImageInfo:
    """Store a windowed slice as an image (for sessions and agent runs); returns its id."""
    stored = store.get(volume_id)
    gray = await asyncio.to_thread(stored.slice_gray, body.plane, body.index, body.window)
    key, image, created = await ctx.engine.add_image(await asyncio.to_thread(png_bytes, gray))
    return ImageInfo(image_id=key, width=image.shape[1], height=image.shape[0], created=created)


@router.post("/volumes/{volume_id}/export", response_class=Response,
             responses={200: {"description": "the mask volume", "content": {
                 media: {} for media, _ in EXPORT_FORMATS.values()}}})
async def export(volume_id: str, body: ExportRequest,
                 store: VolumeStore = Depends(volume_store)) -> Response:
    """Masks of some slices → a mask volume aligned with the input: NIfTI (same shape, affine
    and header) or, for DICOM input, a DICOM SEG referencing the series."""
    stored = store.get(volume_id)
    data, media, name = await asyncio.to_thread(_export, stored, body)
    return Response(data, media_type=media,
                    headers=attachment(name))


def _export(stored: StoredVolume, body: ExportRequest) -> tuple[bytes, str, str]:
    slices = []
    for item in body.slices:
        shape = stored.volume.slice(item.index, body.plane).shape
        slices.append((item.index, mask_from_rle(item.mask.model_dump(), shape,
                                                 f"mask of {body.plane} slice {item.index}")))
    return export_mask(stored, stored.mask_volume(body.plane, slices), body.format, body.label)

