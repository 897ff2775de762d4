"""Reading pictures: one function turns a path, bytes or a PIL image into an upright RGB image."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import ImageError

ImageSource = str | Path | bytes | Image.Image

# Transparent pixels are shown on white, as image viewers do.
_BACKGROUND = (255, 255, 255)


def open_image(source: ImageSource, name: str | None = None, at_least: int | None = None) -> Image.Image:
    """Decode `source` into an RGB image, EXIF orientation applied.

    Any Pillow mode is accepted (RGBA, LA, P, CMYK, 1, L, I;16, I, F). Files that are not
    pictures, truncated pictures and decompression bombs raise ImageError.

    With `at_least`, a large JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's own scaling, through
    Pillow's `draft`) as long as both sides stay at least `at_least` pixels: a 12-megapixel photo then
    decodes in about a third of the time. `info["original_size"]` keeps the size the picture is shown at.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "the picture")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(source, Image.Image):
                image = source
                image.load()
                original_size = image.info.get("original_size", image.size)
            else:
                stream = io.BytesIO(source) if isinstance(source, bytes) else source
                image = Image.open(stream)
                original_size = image.size
                if at_least:
                    image.draft(None, (at_least, at_least))
                image.load()
            upright = ImageOps.exif_transpose(image) or image
            if upright.size != image.size:
                original_size = original_size[::-1]
            rgb = to_rgb(upright)
            rgb.info["original_size"] = original_size
            return rgb
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{label} is too large to open safely ({exc}). Use a smaller picture.") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{label} is not a picture that can be read (JPEG, PNG, WebP, GIF, BMP or TIFF).") from exc
    except FileNotFoundError as exc:
        raise ImageError(f"{label} does not exist.") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"{label} is a folder, not a picture. Give the picture files in it.") from exc
    except PermissionError as exc:
        raise ImageError(f"{label} cannot be read: permission denied.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label} is damaged or truncated and cannot be decoded ({exc}).") from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_to_rgb(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, _BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """Stretch 16-bit or float pixels to 0..255 by their actual range, then gray to RGB."""
    as_float = image.convert("F")
    low, high = as_float.getextrema()
    scale = 255.0 / (high - low) if high > low else 0.0
    gray = as_float.point(lambda value: (value - low) * scale).convert("L")
    return gray.convert("RGB")
