"""Classifying a picture given as a path, bytes or PIL image, in any mode."""
import io

import pytest
import torch
from PIL import Image

from core.errors import ImageError
from core.images import open_image
from core.predict import load_predictor, model_input
from core.presets import EVAL_TRANSFORM, RESIZE_SIZE
from tests.conftest import make_picture


@pytest.fixture(scope="module")
def predictor(tiny_run):
    return load_predictor(tiny_run)


def as_bytes(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def test_probabilities_cover_every_class_and_sum_to_one(predictor):
    prediction = predictor.predict(make_picture("red", 99))
    assert list(prediction.probabilities) == ["blue", "red"]
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
    assert prediction.top_probability == max(prediction.probabilities.values())


def test_path_bytes_and_pil_give_the_same_answer(predictor, tmp_path):
    picture = make_picture("blue", 5)
    picture.save(tmp_path / "p.png")
    from_path = predictor.predict(tmp_path / "p.png").probabilities
    from_bytes = predictor.predict(as_bytes(picture, "PNG")).probabilities
    from_pil = predictor.predict(picture).probabilities
    assert from_path == pytest.approx(from_bytes) and from_path == pytest.approx(from_pil)


@pytest.mark.parametrize("mode, fmt", [("RGBA", "PNG"), ("L", "PNG"), ("P", "GIF"), ("CMYK", "TIFF"),
                                       ("RGB", "WEBP"), ("RGB", "BMP")])
def test_common_upload_formats_are_classified(predictor, mode, fmt):
    data = as_bytes(make_picture("red", 3).convert(mode), fmt)
    assert predictor.predict(data).top_class in ("blue", "red")


def test_a_file_that_is_not_a_picture_gets_a_clear_error(predictor):
    with pytest.raises(ImageError, match="upload.txt is not a picture"):
        predictor.predict(b"hello", name="upload.txt")


def test_a_phone_photo_is_decoded_smaller_and_the_model_sees_the_same_picture(tiny_dataset):
    noise = torch.rand(1, 3, 300, 400, generator=torch.Generator().manual_seed(0)) * 255
    pixels = torch.nn.functional.interpolate(noise, size=(3000, 4000), mode="bilinear").round().clamp(0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels[0].permute(1, 2, 0).to(torch.uint8).numpy()).save(buffer, "JPEG", quality=90)
    photo = buffer.getvalue()
    assert open_image(photo, at_least=RESIZE_SIZE).size == (500, 375)  # decoded at 1/8 scale
    full = EVAL_TRANSFORM(open_image(photo))  # the tutorial's way: all 12 megapixels, then resized
    assert (model_input(photo)[0] - full).abs().mean() < 0.05  # measured 0.036: about 2 levels of 255
    small = next((tiny_dataset / "val").rglob("*.jpg"))  # a JPEG too small to decode smaller: exactly as before
    assert torch.equal(model_input(small)[0], EVAL_TRANSFORM(open_image(small)))
