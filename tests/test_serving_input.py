"""camp.serving_input: client-named paths refused by default (one error whatever the path), read only
inside $CAMP_SERVE_PATHS (regular files, size cap), base64 decoded, and a per-request pixel budget counted
before decoding."""

from __future__ import annotations

import base64
import os

import cv2
import numpy as np
import pytest

from camp import serving_input
from camp.images import UnreadableImage


def _jpeg(path, side=40):
    ok, encoded = cv2.imencode(".jpg", np.full((side, side, 3), 128, np.uint8))
    path.write_bytes(encoded.tobytes())
    return path


@pytest.mark.parametrize("value", ["/etc/passwd", "../../etc/passwd", "/proc/self/environ", "/dev/zero",
                                   "/no/such/file.jpg", "photo.jpg"])
def test_paths_are_refused_by_default_with_one_message(value, monkeypatch):
    monkeypatch.delenv(serving_input.PATHS_ENV, raising=False)
    with pytest.raises(UnreadableImage) as error:
        serving_input.as_image_source(value, 3)
    assert str(error.value) == str(serving_input.refused(3))  # nothing tells whether the file exists


def test_a_path_that_happens_to_be_base64_is_decoded_not_read(monkeypatch):
    monkeypatch.delenv(serving_input.PATHS_ENV, raising=False)
    assert serving_input.as_image_source("/etc", 0) == base64.b64decode("/etc")  # bytes, then "not a readable image"


def test_inside_the_allowed_folders_only_regular_files_under_the_cap_are_read(tmp_path, monkeypatch):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    good = _jpeg(allowed / "a.jpg")
    outside = _jpeg(tmp_path / "outside.jpg")
    (allowed / "link.jpg").symlink_to(outside)
    os.mkfifo(allowed / "pipe.jpg")
    roots = [allowed.resolve()]
    assert serving_input.as_image_source(str(good), 0, roots) == str(good)
    for sneaky in (str(outside), str(allowed / ".." / "outside.jpg"), str(allowed / "link.jpg")):
        with pytest.raises(UnreadableImage, match="not base64-encoded"):
            serving_input.as_image_source(sneaky, 0, roots)
    with pytest.raises(UnreadableImage, match="not a regular file"):
        serving_input.as_image_source(str(allowed / "pipe.jpg"), 0, roots)  # a FIFO would block the reader
    with pytest.raises(UnreadableImage, match="No such file"):
        serving_input.as_image_source(str(allowed / "missing.jpg"), 0, roots)
    monkeypatch.setenv(serving_input.MAX_BYTES_ENV, "10")
    with pytest.raises(UnreadableImage, match="over the served model's limit of 10"):
        serving_input.as_image_source(str(good), 0, roots)


def test_base64_is_decoded_and_the_request_pixel_budget_is_counted_before_decoding(tmp_path, monkeypatch):
    data = _jpeg(tmp_path / "a.jpg", side=100).read_bytes()
    encoded = base64.b64encode(data).decode("ascii")
    assert serving_input.as_image_source(encoded, 0, []) == data
    assert serving_input.encoded_pixels(data) == 100 * 100 and serving_input.encoded_pixels(np.zeros((5, 7, 3), np.uint8)) == 35
    monkeypatch.setattr(serving_input, "MAX_REQUEST_PIXELS", 25_000)
    sources, errors = serving_input.vet([encoded, encoded, encoded])
    assert sources[0] == data and sources[1] == data and sources[2] is serving_input.REFUSED
    assert errors == [(2, "item 2: the request's images exceed 0 megapixels in all; send fewer or smaller "
                          "images per request")]
