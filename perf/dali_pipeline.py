"""NVIDIA DALI doing what preprocess does to a batch of files: decode, resize the shorter side with antialias,
crop the centre, normalise to CHW. The peer of ours in bench_decode (its dali@L columns) and in the served peer
perf/peer_models/preprocess_dali.

DALI is not a dependency of the project: ``pip install nvidia-dali-cuda130`` where it is wanted; its mixed decoder
dlopens libnvimgcodec.so, so the nvImageCodec wheel's folder goes on LD_LIBRARY_PATH (perf/run_device.sh does both).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pixelserve.kernels_numba import PreprocessSpec


def decode_resize_normalise(spec: PreprocessSpec, batch_size: int, threads: int, device_id: int | None,
                            hardware_load: float) -> Any:
    """A built DALI pipeline for batches of up to ``batch_size`` encoded files (fed as "files"), ``hardware_load``
    of each batch to the GPU's JPEG engines; its one output is [N, 3, H, W] in ``spec``'s dtype, on the GPU.
    With ``device_id`` None the same steps run on the CPU (DALI's CPU decoder), for hosts without a GPU."""
    from nvidia.dali import fn, pipeline_def, types

    short = int(round(spec.out_height / spec.crop_fraction))
    dtype = types.FLOAT16 if spec.numpy_dtype == np.float16 else types.FLOAT

    @pipeline_def(batch_size=batch_size, num_threads=threads, device_id=device_id, exec_async=False,
                  exec_pipelined=False, prefetch_queue_depth=1)
    def pipeline():  # type: ignore[no-untyped-def]
        files = fn.external_source(name="files", dtype=types.UINT8)
        if device_id is None:
            images = fn.decoders.image(files, device="cpu", output_type=types.RGB)
        else:
            images = fn.decoders.image(files, device="mixed", output_type=types.RGB, hw_decoder_load=hardware_load)
        images = fn.resize(images, resize_shorter=short, antialias=True, interp_type=types.INTERP_LINEAR)
        return fn.crop_mirror_normalize(images, crop=(spec.out_height, spec.out_width), dtype=dtype, output_layout="CHW",
                                        mean=[255 * m for m in spec.mean], std=[255 * s for s in spec.std])

    built = pipeline()
    built.build()
    return built


def run_batch(pipeline: Any, files: Sequence[bytes]) -> Any:
    """One batch of files through ``pipeline``: its output, a DALI TensorListGPU (the GPU work may still run) or,
    built for the CPU, a TensorListCPU."""
    pipeline.feed_input("files", [np.frombuffer(data, np.uint8) for data in files])
    (output,) = pipeline.run()
    return output
