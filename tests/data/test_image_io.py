"""read_image / read_image_size on every pixel format, through each decoder, and on bad files."""

import pickle

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from dualalign.data import image_io
from dualalign.data.image_io import ImageReadError, read_image, read_image_size

RED_RGB = [255, 0, 0]
RED_BGR = [0, 0, 255]


def _fail(*args, **kwargs):
    raise ValueError("decoder disabled by the test")


@pytest.fixture(params=["default", "opencv", "pillow"])
def decoder(request, monkeypatch):
    """Run a test with every decoder chain: as shipped, without tifffile, with Pillow only."""
    if request.param in ("opencv", "pillow"):
        monkeypatch.setattr(image_io, "_decode_tifffile", _fail)
    if request.param == "pillow":
        monkeypatch.setattr(image_io.cv2, "imread", lambda *args, **kwargs: None)
    return request.param


def _red_first_pixel_rgb(h=3, w=4):
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[0, 0] = RED_RGB
    rgb[1, 1] = [10, 20, 30]
    return rgb


def test_grey_8bit(tmp_path, decoder):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    path = str(tmp_path / "grey.png")
    Image.fromarray(grey, mode="L").save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)


@pytest.mark.parametrize("ext", ["png", "bmp", "tif"])
def test_rgb_channel_order(tmp_path, decoder, ext):
    rgb = _red_first_pixel_rgb()
    path = str(tmp_path / f"rgb.{ext}")
    Image.fromarray(rgb, mode="RGB").save(path)
    bgr = read_image(path, format="BGR")
    assert bgr[0, 0].tolist() == RED_BGR and bgr[1, 1].tolist() == [30, 20, 10]
    out = read_image(path, format="RGB")
    np.testing.assert_array_equal(out, rgb)
    assert out.flags["C_CONTIGUOUS"]


def test_jpeg_red_pixel(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:8] = RED_RGB  # a block, so JPEG chroma subsampling keeps it red
    path = str(tmp_path / "red.jpg")
    Image.fromarray(rgb).save(path, quality=100)
    px = read_image(path, format="RGB")[2, 2].astype(int)
    assert px[0] > 240 and px[1] < 15 and px[2] < 15
    assert read_image(path)[2, 2].tolist() == px[::-1].tolist()


def test_rgba_drops_alpha(tmp_path, decoder):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 10  # red, almost transparent: colour kept, not composited
    path = str(tmp_path / "rgba.png")
    Image.fromarray(rgba, mode="RGBA").save(path)
    out = read_image(path, format="RGB")
    assert out.shape == (2, 3, 3)
    assert (out.reshape(-1, 3) == RED_RGB).all()


def test_grey_alpha(tmp_path, decoder):
    path = str(tmp_path / "la.png")
    Image.new("LA", (3, 2), (100, 50)).save(path)
    assert (read_image(path) == 100).all()


@pytest.mark.parametrize("transparency", [None, 1])
def test_palette(tmp_path, decoder, transparency):
    im = Image.new("P", (3, 2), 1)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)  # index 0 red, 1 green
    im.putpixel((0, 0), 0)
    path = str(tmp_path / "palette.png")
    im.save(path, **({} if transparency is None else {"transparency": transparency}))
    out = read_image(path, format="RGB")
    assert out[0, 0].tolist() == RED_RGB
    assert out[1, 2].tolist() == [0, 255, 0]
    assert read_image(path, format="BGR")[0, 0].tolist() == RED_BGR


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_one_bit(tmp_path, decoder, ext):
    bits = np.array([[0, 1, 1], [1, 0, 0]], bool)
    path = str(tmp_path / f"bits.{ext}")
    Image.fromarray(bits).convert("1").save(path)
    out = read_image(path)
    np.testing.assert_array_equal(out[:, :, 0], bits.astype(np.uint8) * 255)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_grey_16bit_scaled_by_dtype_range(tmp_path, decoder, ext):
    grey = np.array([[0, 255, 256], [32768, 65280, 65535]], np.uint16)
    path = str(tmp_path / f"grey16.{ext}")
    if ext == "png":
        Image.fromarray(grey).save(path)
    else:
        tifffile.imwrite(path, grey)
    out = read_image(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 1], [[0, 0, 1], [128, 255, 255]])


def test_rgb_16bit_png(tmp_path, decoder):
    bgr16 = np.zeros((2, 2, 3), np.uint16)
    bgr16[0, 0, 2] = 65535  # pure red (cv2 writes BGR)
    bgr16[1, 1] = [0x0100, 0x1234, 0xABCD]
    path = str(tmp_path / "rgb16.png")
    assert cv2.imwrite(path, bgr16)
    out = read_image(path, format="RGB")
    assert out[0, 0].tolist() == RED_RGB
    assert out[1, 1].tolist() == [0xAB, 0x12, 0x01]
    assert read_image(path, format="BGR")[0, 0].tolist() == RED_BGR


def _write_rgb16_tiff(path, planar):
    rgb16 = np.zeros((3, 5, 3), np.uint16)
    rgb16[0, 0, 0] = 65535  # pure red (tifffile writes RGB)
    rgb16[2, 4] = [0x8000, 0x0100, 0x00FF]
    if planar:
        tifffile.imwrite(path, rgb16.transpose(2, 0, 1), photometric="rgb", planarconfig="separate")
    else:
        tifffile.imwrite(path, rgb16, photometric="rgb")


def _check_rgb16_tiff(path):
    out = read_image(path, format="RGB")
    assert out.shape == (3, 5, 3)
    assert out[0, 0].tolist() == RED_RGB
    assert out[2, 4].tolist() == [128, 1, 0]
    assert read_image(path)[0, 0].tolist() == RED_BGR


def test_rgb_16bit_tiff(tmp_path, decoder):
    path = str(tmp_path / "rgb16.tif")
    _write_rgb16_tiff(path, planar=False)
    _check_rgb16_tiff(path)


def test_rgb_16bit_planar_tiff(tmp_path):
    # Only tifffile gets this right: OpenCV 4.14 and Pillow 12 both return scrambled pixels.
    path = str(tmp_path / "rgb16_planar.tif")
    _write_rgb16_tiff(path, planar=True)
    _check_rgb16_tiff(path)


def test_tiff_read_by_tifffile_first(tmp_path, monkeypatch):
    rgb16 = np.zeros((2, 2, 3), np.uint16)
    rgb16[0, 0] = [65535, 0, 0]
    path = str(tmp_path / "rgb16.tif")
    tifffile.imwrite(path, rgb16, photometric="rgb")
    monkeypatch.setattr(image_io.cv2, "imread", _fail)
    monkeypatch.setattr(image_io, "_decode_pillow", _fail)
    assert read_image(path, format="RGB")[0, 0].tolist() == RED_RGB


def test_miniswhite_tiff_is_inverted(tmp_path, decoder):
    path = str(tmp_path / "white.tif")
    tifffile.imwrite(path, np.array([[0, 255]], np.uint8), photometric="miniswhite")
    assert read_image(path)[0, :, 0].tolist() == [255, 0]


def test_float_tiff(tmp_path, decoder):
    path = str(tmp_path / "float.tif")
    tifffile.imwrite(path, np.array([[0.0, 0.5, 1.0, 2.0]], np.float32))
    assert read_image(path)[0, :, 0].tolist() == [0, 128, 255, 255]


def test_bad_format_name(tmp_path):
    with pytest.raises(ValueError, match="BGR"):
        read_image(str(tmp_path / "x.png"), format="YUV")


def _truncated(tmp_path, ext):
    rng = np.random.RandomState(0)
    path = str(tmp_path / f"noise.{ext}")
    Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8)).save(path)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_truncated_file_raises(tmp_path, decoder, ext):
    path = _truncated(tmp_path, ext)
    with pytest.raises(ImageReadError, match="truncated or not an image") as info:
        read_image(path)
    assert info.value.path == path and str(info.value).startswith(path + ": cannot decode")
    assert read_image_size(path) == (64, 64)  # the header is intact: only a decode finds it


@pytest.mark.parametrize(
    "content, reason",
    [(None, "file not found"), (b"", "file is empty"), (b"not an image", "cannot decode")],
)
def test_unreadable_files(tmp_path, content, reason):
    path = str(tmp_path / "bad.png")
    if content is not None:
        open(path, "wb").write(content)
    for fn in (read_image, read_image_size):
        with pytest.raises(ImageReadError, match=reason) as info:
            fn(path)
        assert path in str(info.value)


def test_read_image_size_is_height_width(tmp_path):
    path = str(tmp_path / "wide.png")
    Image.new("RGB", (7, 3)).save(path)
    assert read_image_size(path) == (3, 7)


def test_error_survives_pickling():
    err = pickle.loads(pickle.dumps(ImageReadError("/a/b.png", "file not found")))
    assert (err.path, err.reason) == ("/a/b.png", "file not found")
    assert str(err) == "/a/b.png: file not found"
