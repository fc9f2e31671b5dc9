"""Images sent to the service: base64 (``/score``) or a task's URL fetched from Label Studio (``/predict``).

Every check answers with a :class:`ClientError` naming the problem and the fix: bad base64 (400), a file that is
not a supported image (415), too many pixels or bytes (413). Task images are fetched only from the Label Studio
server in the project's settings (or inline ``data:`` URIs), never from another host and without following
redirects, so the service cannot be used to reach arbitrary addresses.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from urllib.parse import urljoin, urlparse

import numpy as np
from PIL import Image, UnidentifiedImageError

from curation.prelabel.images import _to_rgb  # the prelabel stage's mode handling (16-bit, alpha, palette)
from curation.serve.errors import ClientError

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w=.+-]+)*;base64,", re.IGNORECASE)


def decode_base64(text: str, *, what: str = "image") -> bytes:
    """Bytes of a base64 string (a ``data:...;base64,`` prefix is allowed; whitespace is ignored)."""
    body = _DATA_URI.sub("", text.strip(), count=1)
    body = "".join(body.split())
    if not body:
        raise ClientError(f"{what} is empty; send the image file's bytes encoded as base64")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ClientError(
            f"{what} is not valid base64 ({err}); encode the file's bytes with standard base64 "
            "(e.g. `base64 -w0 image.png`)"
        ) from None


def open_rgb(data: bytes, *, max_pixels: int, what: str = "image") -> np.ndarray:
    """Decode image bytes to upright uint8 RGB (H, W, 3), checking the pixel count before decoding."""
    from PIL import ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ClientError(
                    f"{what} is {width}x{height} pixels, more than the limit of {max_pixels} (serve.max_image_pixels); "
                    "send a downscaled copy",
                    413,
                )
            image.load()
            image = ImageOps.exif_transpose(image)
            return np.asarray(_to_rgb(image))
    except ClientError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ClientError(
            f"{what} is not an image this service can read ({type(err).__name__}); send PNG, JPEG, BMP, TIFF or WebP",
            415,
        ) from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt files
        raise ClientError(
            f"{what} could not be decoded ({type(err).__name__}: {err}); send the complete file", 415
        ) from None


def image_key(label_config: str | None) -> str:
    """The task data key the project's ``<Image value="$key">`` reads (``image`` when there is no config)."""
    import xml.etree.ElementTree as ET

    if not label_config:
        return "image"
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError as err:
        raise ClientError(f"the project's label_config is not valid XML ({err})") from None
    for node in root.iter("Image"):
        value = node.get("value", "")
        if value.startswith("$"):
            return value[1:]
    raise ClientError('the project\'s labeling interface has no <Image value="$..."> tag; this backend labels images')


def resolve_url(url: str, studio_url: str) -> str:
    """The absolute URL to fetch for a task image; only on the Label Studio server itself."""
    absolute = urljoin(studio_url.rstrip("/") + "/", url)
    origin, target = urlparse(studio_url), urlparse(absolute)
    if (target.scheme, _host(target.hostname), target.port) != (origin.scheme, _host(origin.hostname), origin.port):
        raise ClientError(
            f"task image {url!r} is not on the Label Studio server {studio_url}; this backend fetches images only "
            "from Label Studio (local files, uploads or cloud storage served through it) or inline data: URIs"
        )
    return absolute


def _host(name: str | None) -> str | None:
    return "127.0.0.1" if name in ("localhost", "::1") else name
