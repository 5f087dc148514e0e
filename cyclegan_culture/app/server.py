"""The local web app: drop a photo, tick cultures, see each culture's rendering beside the photo.

Starlette (a small, well-kept ASGI toolkit) with uvicorn serves one static page and a three-route JSON/image
API; the page is plain HTML and JavaScript shipped in the package, so nothing loads from the internet. Uploads
are raw image bytes (no multipart parser needed), limited in size; images are translated at their own size,
large ones through the tiled path.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from cyclegan_culture.data.images import BadImage, load_rgb
from cyclegan_culture.errors import UserError
from cyclegan_culture.inference import Stylizer
from cyclegan_culture.pretrained import catalog

STATIC = Path(__file__).resolve().parent / "static"
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
MAX_PIXELS = 40_000_000  # about 8000 x 5000: larger photos are refused before decoding


class Renderers:
    """One Stylizer per culture, loaded on first use; one translation at a time per culture."""

    def __init__(self, device: str = "cpu", tile: int = 512):
        self.device, self.tile = device, tile
        self._stylizers: dict[str, Stylizer] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def render(self, key: str, image: Image.Image) -> Image.Image:
        with self._guard:
            if key not in self._stylizers:
                self._stylizers[key] = Stylizer.from_pretrained(key, device=self.device, tile=self.tile)
                self._locks[key] = threading.Lock()
        with self._locks[key]:
            return self._stylizers[key].stylize(image)


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def decode_upload(data: bytes) -> Image.Image:
    """The uploaded bytes as an RGB image, or UserError saying what is wrong with them."""
    if not data:
        raise UserError("the upload is empty; choose a photo file")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except (UnidentifiedImageError, OSError):
        raise UserError("this file is not an image we can read (use JPEG, PNG, WebP, BMP or TIFF)") from None
    if width * height > MAX_PIXELS:
        raise UserError(f"the image is {width} x {height} pixels; the app takes up to {MAX_PIXELS // 1_000_000} "
                        "megapixels (use cyclegan-culture stylize for larger ones)")
    try:
        return load_rgb(io.BytesIO(data))
    except BadImage as exc:
        raise UserError(f"this image cannot be decoded: {exc}") from None


def create_app(device: str = "cpu", tile: int = 512) -> Starlette:
    renderers = Renderers(device, tile)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def cultures(request: Request) -> Response:
        rows = [{"key": key, "title": m.culture.name, "native_name": m.culture.native_name,
                 "region": m.culture.region, "summary": m.summary()} for key, m in catalog.installed().items()]
        return JSONResponse(rows)

    async def examples(request: Request) -> Response:
        return JSONResponse([p.name for p in catalog.examples()])

    async def example(request: Request) -> Response:
        name = request.path_params["name"]
        match = [p for p in catalog.examples() if p.name == name]
        return FileResponse(match[0], media_type="image/jpeg") if match else _error("no such example", 404)

    async def stylize(request: Request) -> Response:
        key = request.query_params.get("culture", "")
        if key not in catalog.installed():
            return _error(f"unknown culture {key!r}", 404)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
            return _error(f"the file is larger than {MAX_UPLOAD_BYTES // 2**20} MB; choose a smaller photo", 413)
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_UPLOAD_BYTES:
                return _error(f"the file is larger than {MAX_UPLOAD_BYTES // 2**20} MB; choose a smaller photo", 413)
        try:
            image = decode_upload(bytes(data))
        except UserError as exc:
            return _error(str(exc))
        result = await run_in_threadpool(renderers.render, key, image)
        buf = io.BytesIO()
        result.save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png")

    return Starlette(routes=[
        Route("/", index), Route("/api/cultures", cultures), Route("/api/examples", examples),
        Route("/examples/{name}", example), Route("/api/stylize", stylize, methods=["POST"]),
    ])


def serve(port: int = 7860, host: str = "127.0.0.1", device: str = "cpu") -> None:
    import uvicorn

    uvicorn.run(create_app(device), host=host, port=port, log_level="warning")
