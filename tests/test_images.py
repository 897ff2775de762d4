"""Pictures in any Pillow mode, EXIF orientation, and clear errors for what is not a picture."""
import io

import numpy as np
import pytest
from PIL import Image

from core.errors import ImageError
from core.images import open_image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "1", "CMYK", "I;16", "I", "F", "P", "RGB"])
def test_every_mode_becomes_rgb_of_the_same_size(mode):
    image = Image.new("RGB", (30, 20), (120, 80, 40)).convert(mode)
    result = open_image(image)
    assert result.mode == "RGB" and result.size == (30, 20)


def test_transparent_pixels_are_shown_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    image.putpixel((0, 0), (255, 0, 0, 255))
    result = open_image(encode(image, "PNG"))
    assert result.getpixel((1, 1)) == (255, 255, 255)
    assert result.getpixel((0, 0)) == (255, 0, 0)


def test_palette_with_transparency_is_flattened_on_white():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    image.putpixel((0, 0), 1)
    result = open_image(encode(image, "GIF", transparency=0))
    assert result.getpixel((2, 2)) == (255, 255, 255)
    assert result.getpixel((0, 0)) == (10, 200, 10)


def test_sixteen_bit_pictures_use_their_whole_range():
    gradient = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    image = Image.fromarray(gradient)
    assert image.mode == "I;16"
    result = np.asarray(open_image(encode(image, "PNG")))
    assert result.min() == 0 and result.max() == 255


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    result = open_image(encode(image, "JPEG", exif=exif))
    assert result.size == (20, 40)


def test_bytes_that_are_not_a_picture_give_a_clear_error():
    with pytest.raises(ImageError, match="not a picture"):
        open_image(b"%PDF-1.4 definitely not an image", name="notes.pdf")


def test_truncated_picture_gives_a_clear_error():
    data = encode(Image.new("RGB", (200, 200), (10, 20, 30)), "JPEG", quality=95)
    with pytest.raises(ImageError, match="damaged or truncated"):
        open_image(data[: len(data) // 2], name="half.jpg")


def test_decompression_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageError, match="too large"):
        open_image(data, name="bomb.png")


def test_missing_file_gives_a_clear_error(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        open_image(tmp_path / "nowhere.jpg")


def test_a_large_jpeg_can_be_decoded_smaller_but_never_below_the_size_asked(tmp_path):
    image = Image.radial_gradient("L").resize((2000, 1200)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: 1200 wide, 2000 high
    data = encode(image, "JPEG", exif=exif)
    full, reduced = open_image(data), open_image(data, at_least=256)
    assert full.size == (1200, 2000) and full.info["original_size"] == (1200, 2000)
    assert reduced.size == (300, 500) and reduced.info["original_size"] == (1200, 2000)  # 1/4 scale: 1/8 is too small
    png = encode(image, "PNG")
    assert open_image(png, at_least=256).size == (2000, 1200)  # only JPEGs have a cheaper smaller decode

