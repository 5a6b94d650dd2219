"""The classifier in PyTorch on one GPU, FP16, for GPU hosts without TensorRT.

EfficientNet-Lite0 (the `efficientnet_lite_pytorch` architecture) is loaded from the weights file that
``build/build_classifier.py --flavour torch`` writes. Every batch-size bucket (powers of two up to
``max_batch_size``) is captured once as a CUDA graph; a call copies its inputs into the graph's static
input, replays the smallest bucket that holds them and returns a copy of the logits.
Before capture, each BatchNorm is folded into the convolution before it and symmetric "same" padding moves into
the convolution (``fold_for_inference``), as TensorRT does when it builds an engine: each replay then launches 61
kernels fewer (49 BatchNorms, 12 pads) of about 160, which is what sets the time at small batches.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .cuda_streams import external_stream

if TYPE_CHECKING:
    import torch

WEIGHTS_FORMAT = "pixelserve-torch-classifier-1"


PRIORITY_PARAMETER, FOLD_PARAMETER = "cuda_stream_priority", "fold_batchnorm"


def options_from_parameters(parameters: Mapping[str, str]) -> dict[str, bool]:
    """TorchCudaClassifier's ``high_priority`` and ``fold`` from a model config's ``cuda_stream_priority``
    ("normal" or "high") and ``fold_batchnorm`` ("true" or "false"); ValueError names a missing or wrong one."""
    priority, fold = parameters.get(PRIORITY_PARAMETER), parameters.get(FOLD_PARAMETER)
    if priority not in ("normal", "high") or fold not in ("true", "false"):
        raise ValueError(f"parameters {PRIORITY_PARAMETER}={priority!r} (expected 'normal' or 'high') and "
                         f"{FOLD_PARAMETER}={fold!r} (expected 'true' or 'false')")
    return {"high_priority": priority == "high", "fold": fold == "true"}


def batch_buckets(max_batch_size: int) -> list[int]:
    """The batch sizes a CUDA graph is captured for: powers of two below ``max_batch_size``, and it."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return sizes + [max_batch_size]


def build_network(arch: str) -> torch.nn.Module:
    """The float32 torch module of ``arch`` (random weights)."""
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name(arch)  # type: ignore[no-any-return]  # efficientnet_lite_pytorch is untyped


def save_weights(model: torch.nn.Module, arch: str, path: str) -> None:
    """Write ``model``'s weights in FP16 (the precision it is served in) with the name of its architecture."""
    import torch

    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save({"format": WEIGHTS_FORMAT, "arch": arch, "state_dict": state}, path)


# (module class name, (convolution, its BatchNorm) attribute pairs) of the efficientnet_lite_pytorch architecture.
_CONV_BN_PAIRS = {
    "EfficientNet": (("_conv_stem", "_bn0"), ("_conv_head", "_bn1")),
    "MBConvBlock": (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")),
}


def fold_for_inference(model: torch.nn.Module) -> dict[str, int]:
    """Fold every BatchNorm into the convolution before it and move symmetric padding into the convolution, in place.

    ``model`` must be in eval mode (folding uses the running statistics). Returns how many BatchNorms and padding
    layers were removed. The result computes the same function up to rounding.
    """
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.training:
        raise ValueError("fold_for_inference needs a model in eval mode")
    folded = {"batchnorm": 0, "padding": 0}
    for module in list(model.modules()):
        for conv_name, bn_name in _CONV_BN_PAIRS.get(type(module).__name__, ()):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if conv is None and bn is None:  # e.g. no expansion convolution in a block of expand ratio 1
                continue
            if not isinstance(conv, torch.nn.Conv2d) or not isinstance(bn, torch.nn.BatchNorm2d):
                raise ValueError(f"{type(module).__name__}.{conv_name}/{bn_name}: expected Conv2d then BatchNorm2d, "
                                 f"found {type(conv).__name__} and {type(bn).__name__}")
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, torch.nn.Identity())
            folded["batchnorm"] += 1
    for module in model.modules():
        pad = getattr(module, "static_padding", None)
        if isinstance(module, torch.nn.Conv2d) and isinstance(pad, torch.nn.ZeroPad2d) and module.padding == (0, 0):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom:  # stride-2 layers pad one side more: those keep their pad
                module.padding = (top, left)
                module.static_padding = torch.nn.Identity()
                folded["padding"] += 1
    return folded


def load_network(path: str) -> torch.nn.Module:
    """The module stored by ``save_weights``, in float32 on the CPU, eval mode."""
    import torch

    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path} is not a weights file written by save_weights (format {saved.get('format')!r})")
    model = build_network(saved["arch"])
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in saved["state_dict"].items()})
    return model.eval()


class TorchCudaClassifier:
    """FP16 inference of a torch classifier on one GPU, replayed from CUDA graphs per batch bucket."""

    on_gpu = True

    def __init__(self, weights_path: str, device_id: int, max_batch_size: int,
                 input_shape: tuple[int, ...], channels_last: bool = True,
                 input_dtype: str = "float32", high_priority: bool = False, fold: bool = True) -> None:
        import torch

        self.torch = torch
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.device = torch.device("cuda", device_id)
        torch.cuda.set_device(self.device)
        torch.backends.cudnn.benchmark = True
        network = load_network(weights_path)
        self.folded = fold_for_inference(network) if fold else {"batchnorm": 0, "padding": 0}
        # Module.to takes memory_format (it forwards to Tensor.to); torch's overloads of it leave it out.
        self.model = network.half().to(  # type: ignore[call-overload]
            self.device, memory_format=self.memory_format)
        # A high-priority stream lets the classifier's kernels (graph replays take the priority of the stream they
        # are launched into) go ahead of other processes' decode and preprocess kernels where the GPU runs them side
        # by side (MPS); time-sliced processes never share the GPU, so there it changes nothing.
        self.stream = torch.cuda.Stream(self.device, priority=-1 if high_priority else 0)  # type: ignore[no-untyped-call]
        self.buckets = batch_buckets(max_batch_size)
        dtype = getattr(torch, np.dtype(input_dtype).name)
        self.static_in = torch.zeros((max_batch_size, *input_shape), dtype=dtype, device=self.device)
        # Host batches are gathered here first, so that they reach the GPU in one DMA, not one per request.
        self.staging = torch.empty((max_batch_size, *input_shape), dtype=dtype, pin_memory=True)
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._capture()
        classes = self._graphs[self.buckets[-1]][1].shape[1]
        self.host_logits = torch.empty((max_batch_size, classes), dtype=torch.float32, pin_memory=True)
        # Re-recorded for every staged batch: a stream's wait takes the event's latest record at the time of the wait.
        self._inputs_ready = torch.cuda.Event()  # type: ignore[no-untyped-call]

    def _forward(self, batch: int) -> torch.Tensor:
        x = self.static_in[:batch].to(self.torch.float16).contiguous(memory_format=self.memory_format)
        return self.model(x).float()  # type: ignore[no-any-return]  # torch types Module.__call__ as Any

    def _capture(self) -> None:
        torch = self.torch
        pool = torch.cuda.graph_pool_handle()
        with torch.no_grad(), torch.cuda.stream(self.stream):
            for batch in self.buckets:  # warm-up: cuDNN picks its algorithms outside the capture
                for _ in range(3):
                    self._forward(batch)
            self.stream.synchronize()
            for batch in reversed(self.buckets):  # largest first, so smaller graphs reuse its pool
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=self.stream):
                    out = self._forward(batch)
                self._graphs[batch] = (graph, out)
        self.stream.synchronize()

    def from_dlpack(self, capsule: object) -> torch.Tensor:
        """A device view of a batch that arrived on the GPU (no copy)."""
        return self.torch.from_dlpack(capsule)  # type: ignore[attr-defined]  # not in torch.__all__

    def _bucket(self, n: int) -> int:
        return next(b for b in self.buckets if b >= n)

    def run(self, batches: Sequence[Any]) -> torch.Tensor:
        """float32 logits [N, classes] on the GPU for the concatenated [n, 3, H, W] batches (host or device)."""
        torch = self.torch
        total = sum(int(b.shape[0]) for b in batches)
        if total <= self.buckets[-1] and batches and all(isinstance(b, np.ndarray) for b in batches):
            host = self.staging[:total].numpy()
            np.concatenate(batches, out=host)
            batches = [self.staging[:total]]
        results = []
        with torch.no_grad(), torch.cuda.stream(self.stream):
            filled = 0
            for batch in batches:
                tensor = torch.as_tensor(batch)
                offset = 0
                while offset < tensor.shape[0]:
                    take = min(tensor.shape[0] - offset, self.buckets[-1] - filled)
                    self.static_in[filled:filled + take].copy_(tensor[offset:offset + take], non_blocking=True)
                    filled += take
                    offset += take
                    if filled == self.buckets[-1]:
                        results.append(self._replay(filled))
                        filled = 0
            if filled:
                results.append(self._replay(filled))
            logits = results[0] if len(results) == 1 else torch.cat(results)
            self.stream.synchronize()  # the next step reads the logits as soon as they are returned
        if logits.shape[0] != total:
            raise RuntimeError(f"classified {logits.shape[0]} images of {total}")
        return logits

    def staged_input(self, n: int) -> torch.Tensor:
        """The graph's input rows for a batch of ``n`` (at most ``max_batch_size``): a caller that fills them, complete
        before ``classify_staged``, saves ``run``'s copy into them."""
        if not 0 < n <= self.buckets[-1]:
            raise ValueError(f"a staged batch holds 1 to {self.buckets[-1]} images, got {n}")
        return self.static_in[:n]

    def classify_staged(self, n: int, after_stream: int | None = None) -> npt.NDArray[np.float32]:
        """float32 logits [n, classes] on the host for the batch of ``n`` written into ``staged_input(n)``; with
        ``after_stream`` (a raw CUDA stream), by work queued there that need not be complete yet."""
        torch = self.torch
        if after_stream is not None:  # the GPU waits for it, not the host
            self._inputs_ready.record(external_stream(after_stream, self.device.index))
            self.stream.wait_event(self._inputs_ready)
        with torch.no_grad(), torch.cuda.stream(self.stream):
            host = self.host_logits[:n]
            host.copy_(self._replay_view(n), non_blocking=True)  # into page-locked memory: one DMA, then one wait
            self.stream.synchronize()
        return host.numpy().copy()  # the page-locked rows are reused by the next batch

    def replay_seconds(self, batch: int, repeats: int = 50) -> float:
        """Median GPU seconds of one replay of the graph for ``batch`` (CUDA events; for benchmarks)."""
        torch = self.torch
        graph, _ = self._graphs[batch]
        times: list[float] = []
        with torch.cuda.stream(self.stream):
            for _ in range(repeats):
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                graph.replay()
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop) / 1e3)
        return sorted(times)[len(times) // 2]

    def _replay_view(self, n: int) -> torch.Tensor:
        """Replay the graph of n's bucket; its output rows for n, valid until the next replay."""
        graph, out = self._graphs[self._bucket(n)]
        graph.replay()
        return out[:n]

    def _replay(self, n: int) -> torch.Tensor:
        return self._replay_view(n).clone()
