"""What the preprocessing produces: output size, resize policy, normalisation, layout and dtype."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .arrays import Norm

RESIZE_MODES = ("stretch", "shorter_side_crop", "letterbox")
CHANNEL_ORDERS = ("RGB", "BGR")
OUTPUT_DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class PreprocessSpec:
    """One preprocessing recipe: uint8 HWC image -> normalised CHW tensor of a fixed size.

    resize_mode:
      - "stretch": resize both axes to the output size (aspect ratio not kept).
      - "shorter_side_crop": torchvision Resize(round(min(out) / crop_fraction)) + CenterCrop(out).
      - "letterbox": keep the aspect ratio, fit inside the output, pad with ``pad_value``.
    mean/std are in [0, 1] units: out = (pixel / 255 - mean) / std.
    input_order is the channel order of incoming images; outputs are always RGB planes.
    pad_value is a pixel value (0..255), normalised like any pixel.
    antialias=True reproduces PIL ``resize(BILINEAR)`` / torchvision ``Resize(antialias=True)``: a
    triangle filter widened by the downscale factor (the training-time preprocessing of most models);
    False is plain 4-tap bilinear (OpenCV INTER_LINEAR, torch interpolate without antialias).
    max_image_side bounds the accepted input (oversized images are rejected, not resized).
    """

    out_height: int = 224
    out_width: int = 224
    resize_mode: str = "shorter_side_crop"
    crop_fraction: float = 0.875
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    input_order: str = "RGB"
    output_dtype: str = "float32"
    pad_value: float = 0.0
    antialias: bool = True
    max_image_side: int = 8192

    def __post_init__(self) -> None:
        if self.out_height < 1 or self.out_width < 1:
            raise ValueError(f"output size must be positive, got {self.out_height}x{self.out_width}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        if self.input_order not in CHANNEL_ORDERS:
            raise ValueError(f"input_order must be one of {CHANNEL_ORDERS}, got {self.input_order!r}")
        if self.output_dtype not in OUTPUT_DTYPES:
            raise ValueError(f"output_dtype must be one of {tuple(OUTPUT_DTYPES)}, got {self.output_dtype!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std need 3 values each and std > 0, got {self.mean} / {self.std}")
        if not 0.0 <= self.pad_value <= 255.0:
            raise ValueError(f"pad_value is a pixel value in [0, 255], got {self.pad_value}")
        if self.max_image_side < 1:
            raise ValueError(f"max_image_side must be positive, got {self.max_image_side}")

    @property
    def numpy_dtype(self) -> type:
        """The numpy dtype of the output tensor."""
        return OUTPUT_DTYPES[self.output_dtype]

    def normalisation(self) -> Norm:
        """float32 [3, 3] per output channel: scale, bias (out = pixel * scale + bias), normalised pad pixel."""
        std = np.asarray(self.std, np.float64)
        mean = np.asarray(self.mean, np.float64)
        scale, bias = 1.0 / (255.0 * std), -mean / std
        table: Norm = np.stack([scale, bias, self.pad_value * scale + bias]).astype(np.float32)  # Any to numpy's stubs
        return table

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, object]) -> "PreprocessSpec":
        """Build a spec from Triton model-config parameters as ``{name: value}`` (values as strings or numbers).

        Unknown keys are ignored so that the config can hold other settings; absent keys keep defaults.
        (pixelserve.build.classifier_config.preprocess_spec reads them from a config.pbtxt file.)
        """
        values = {key: str(value) for key, value in parameters.items()}
        kwargs: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            if field.name not in values:
                continue
            raw = values[field.name].strip()
            try:
                kwargs[field.name] = _parse_field(field.name, raw)
            except ValueError as exc:
                raise ValueError(f"parameter {field.name}={raw!r}: {exc}") from None
        return cls(**kwargs)  # type: ignore[arg-type]


def _parse_field(name: str, raw: str) -> object:
    if name in ("out_height", "out_width", "max_image_side"):
        return int(raw)
    if name in ("crop_fraction", "pad_value"):
        return float(raw)
    if name in ("mean", "std"):
        parts = [float(p) for p in raw.replace(",", " ").split()]
        if len(parts) != 3:
            raise ValueError("needs 3 numbers")
        return tuple(parts)
    if name == "antialias":
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError("needs true or false")
        return raw.lower() in ("true", "1", "yes")
    return raw
