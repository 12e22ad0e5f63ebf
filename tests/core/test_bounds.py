"""Every argument bounded before work starts (issue 16): the hostile values of the fuzz run.

Each case is refused with an error naming the field (or the list item) and the rule, quoting at
most a short excerpt of the value, and nothing is sent: the emulator creates no prediction.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError

from flux_tools import FluxInputError, FluxKontextProInput, FluxProInput
from flux_tools._drivers.local_images import LocalImages
from flux_tools.kit import model_spec

from ..conftest import Flux

MakeFlux = Callable[..., Flux]


def png_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, format="PNG")
    return out.getvalue()


PNG_URI = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()


HOSTILE_IMAGES: list[tuple[str, str]] = [
    ("../" * 1_000_000, "at most 4096"),  # 3 MB: refused by length, never resolved
    ("data:text/plain;base64,aGVsbG8=", "must hold an image"),
    ("data:image/png;base64,!!!!", "not valid base64"),
    ("data:image/png;base64,", "is empty"),
    ("data:image/png;base64," + base64.b64encode(b"hello, not an image").decode(), "not hold an"),
    ("data:image/png,notbase64", "base64-encoded"),
    ("http://", "has no host"),
    ("https://", "has no host"),
    ("http://[::1", "malformed"),
    ("https://example.com:99999/a.png", "malformed"),
    ("https://exa mple.com/a.png", "spaces or control characters"),
    ("https://example.com/" + "a" * 9000, "at most 8192"),
    ("file:///etc/passwd", "unsupported URL scheme"),
    ("a\x00b.png", "NUL byte"),
    ("x" * 300 + ".png", "longer than 255 bytes"),
]


@pytest.mark.parametrize(("value", "rule"), HOSTILE_IMAGES)
def test_hostile_image_sources_are_refused_by_the_schema(value: str, rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        FluxProInput(prompt="x", image_prompt=value)
    (error,) = info.value.errors()
    assert error["loc"] == ("image_prompt",)
    assert rule in error["msg"]
    assert len(error["msg"]) < 300  # the value is quoted short, if at all


def test_a_long_path_is_refused_before_any_path_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_resolution(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the path was resolved")

    images = LocalImages(["/tmp"])
    monkeypatch.setattr(Path, "resolve", no_resolution)
    monkeypatch.setattr(os.path, "realpath", no_resolution)
    for value in ("../" * 1_000_000, "../" * 3_500_000):
        with pytest.raises(ValidationError, match="at most 4096"):
            FluxKontextProInput(prompt="x", input_image=value)
        with pytest.raises(FluxInputError, match="at most 4096") as info:
            images.find(value, "input_image")  # the reader checks too
        assert info.value.fields == ["input_image"]
        assert len(str(info.value)) < 300


def test_paths_that_cannot_be_paths_are_named(tmp_path: Path) -> None:
    images = LocalImages([tmp_path])
    with pytest.raises(FluxInputError, match="names no user on this machine") as info:
        images.find("~nosuchuser_flux/x.png", "input_image")
    assert info.value.fields == ["input_image"]
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(FluxInputError, match="a loop of symbolic links") as info:
        images.find(str(loop), "input_image")
    assert "Internal" not in str(info.value)
    with pytest.raises(FluxInputError, match="NUL byte"):
        images.find("a\x00b.png", "input_images[1]")


def test_unknown_fields_are_refused_whatever_their_value() -> None:
    values: list[Any] = [None, "", 0, [], {}]
    for value in values:
        with pytest.raises(ValidationError) as info:
            FluxProInput.model_validate({"prompt": "a cat", "0": value})
        assert info.value.errors()[0]["loc"] == ("0",)
        assert info.value.errors()[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("prompt", "a" * 1_000_000, "at most 10000"),
        ("prompt", "a cat \ud800", "unicode"),  # pydantic's own check comes first
        ("prompt", "a cat\x00", "NUL byte"),
        ("seed", 10**5000, "64-bit"),
        ("seed", -(2**64), "64-bit"),
        ("guidance", float("nan"), "finite"),
    ],
    ids=["long-prompt", "surrogate", "nul", "huge-seed", "negative-seed", "nan"],
)
def test_other_values_are_bounded(field: str, value: Any, rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        FluxProInput.model_validate({"prompt": "x", field: value})
    assert info.value.errors()[0]["loc"] == (field,)
    assert rule in info.value.errors()[0]["msg"]


def test_a_refused_megabyte_is_not_echoed() -> None:
    spec = model_spec("flux-2-pro")
    assert spec is not None
    huge = "ftp://" + "A" * 1_000_000
    with pytest.raises(ValidationError) as info:
        spec.input_model.model_validate({"prompt": "x", "input_images": [PNG_URI, huge]})
    message = str(FluxInputError.from_validation_error(info.value, {}))
    assert "input_images" in message and len(message) < 400


def test_url_schemes_are_case_insensitive() -> None:
    assert FluxProInput(prompt="x", image_prompt="HTTPS://example.com/a.png").image_prompt == (
        "https://example.com/a.png"
    )
    assert FluxProInput(
        prompt="x", image_prompt=PNG_URI.replace("data:", "DATA:")
    ).image_prompt == (PNG_URI)


def test_wrapped_base64_is_taken_and_sent_unwrapped() -> None:
    payload = PNG_URI.partition(",")[2]
    wrapped = "data:image/png;base64," + "\n".join(
        payload[i : i + 76] for i in range(0, len(payload), 76)
    )
    assert FluxProInput(prompt="x", image_prompt=wrapped).image_prompt == PNG_URI
