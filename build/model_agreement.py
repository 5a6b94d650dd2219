"""How closely one classifier follows another on the same images: top-1 agreement and top-5 overlap."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pixelserve.model_runtime.tensors import LOGITS, PIXELS

Logits = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Agreement:
    """Agreement of a candidate model with the reference on one image set."""

    image_set: str
    images: int
    top1_agreement: float  # share of images whose top-1 class is the same
    top5_overlap: float  # mean share of the reference top-5 classes found in the candidate top-5
    top1_disagreements: int

    def row(self) -> str:
        """A markdown table row: set | images | top-1 agreement | top-5 overlap | disagreements."""
        return (
            f"| {self.image_set} | {self.images} | {self.top1_agreement:.2%} | "
            f"{self.top5_overlap:.2%} | {self.top1_disagreements} |"
        )


TABLE_HEADER = (
    "| image set | images | top-1 agreement | top-5 overlap | top-1 disagreements |\n"
    "|---|---:|---:|---:|---:|"
)


def compare_logits(image_set: str, reference: Logits, candidate: Logits) -> Agreement:
    """Compare two [N, classes] logit arrays computed on the same N images."""
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise ValueError(f"logit shapes differ or are not [N, classes]: {reference.shape} vs {candidate.shape}")
    same_top1 = reference.argmax(axis=1) == candidate.argmax(axis=1)
    ref_top5 = np.argsort(-reference, axis=1)[:, :5]
    cand_top5 = np.argsort(-candidate, axis=1)[:, :5]
    overlap = [len(set(r) & set(c)) / 5 for r, c in zip(ref_top5.tolist(), cand_top5.tolist())]
    return Agreement(
        image_set=image_set,
        images=len(reference),
        top1_agreement=float(same_top1.mean()),
        top5_overlap=float(np.mean(overlap)),
        top1_disagreements=int((~same_top1).sum()),
    )


def onnx_logits(model: Path, pixels: Logits, as_written: bool = False, batch_size: int = 32) -> Logits:
    """Run an ONNX classifier (input ``pixels``, output ``logits``) on CPU with ONNX Runtime.

    as_written=True disables graph optimisation, so a Q/DQ model runs its QuantizeLinear /
    DequantizeLinear nodes literally (the quantisation the ONNX file specifies) instead of
    ONNX Runtime's fused int8 CPU kernels.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if as_written:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    chunks: list[Logits] = [
        np.asarray(session.run([LOGITS], {PIXELS: pixels[start : start + batch_size]})[0], dtype=np.float32)
        for start in range(0, len(pixels), batch_size)
    ]
    return np.concatenate(chunks)


def with_pixel_noise(pixels: Logits, pixel_step: Logits, seed: int) -> Logits:
    """`pixels` [N,3,H,W] plus uniform noise of +-1/2 uint8 step per channel: finer than an 8-bit image can show.

    Comparing a model with itself on such inputs gives the agreement floor that no
    8-bit-faithful change of the model can be expected to beat on the same images.
    """
    rng = np.random.default_rng(seed)
    noise = rng.uniform(-0.5, 0.5, pixels.shape).astype(np.float32)
    return (pixels + noise * pixel_step.reshape(1, -1, 1, 1)).astype(np.float32)


def confident(reference: Logits, min_probability: float) -> npt.NDArray[np.bool_]:
    """Boolean mask of the images whose reference top-1 softmax probability is at least `min_probability`."""
    shifted = reference - reference.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return np.asarray(probabilities.max(axis=1) >= min_probability)
