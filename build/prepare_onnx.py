"""Turn any ImageNet classifier ONNX into one the `classifier` model can serve.

Usage: python -m pixelserve.build.prepare_onnx INPUT.onnx [--output OUT.onnx]

Checks the model takes one NCHW float32 image batch of preprocess's output size
(its `pixels` output's dims in model_repository/preprocess/config.pbtxt: 3x224x224
as shipped; height and width may be free) and returns one float32 [N, 1000] output;
renames them to `pixels` / `logits`; makes a static batch of 1 dynamic where the graph allows it; then
proves with ONNX Runtime that the result batches correctly before saving.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from . import classifier_config

INPUT_NAME = classifier_config.INPUT_NAME
OUTPUT_NAME = classifier_config.OUTPUT_NAME
NUM_CLASSES = 1000
BATCH_PARAM = "batch"


class OnnxModelError(ValueError):
    """The ONNX model cannot be used as the ImageNet classifier; the message says why."""


@dataclass
class PrepareReport:
    """What prepare() found and changed."""

    original_input: str
    original_output: str
    batch_made_dynamic: bool = False
    reshapes_patched: list = field(default_factory=list)


def _dims(value_info) -> list | None:
    """Dims of a tensor value_info as ints, strings (symbolic) or None (unknown); None if no shape."""
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    out = []
    for d in tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(d.dim_value)
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def graph_inputs(model: onnx.ModelProto) -> list:
    """Return the graph inputs that are fed at run time (initializers excluded)."""
    initialized = {t.name for t in model.graph.initializer} | {t.values.name for t in model.graph.sparse_initializer}
    return [i for i in model.graph.input if i.name not in initialized]


def validate(model: onnx.ModelProto) -> None:
    """Raise OnnxModelError unless `model` looks like an NCHW ImageNet classifier."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise OnnxModelError(f"not a valid ONNX model: {exc}") from exc

    inputs, outputs = graph_inputs(model), list(model.graph.output)
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise OnnxModelError(f"expected exactly one image input, found {len(inputs)} ({names})")
    if len(outputs) != 1:
        names = ", ".join(o.name for o in outputs) or "none"
        raise OnnxModelError(f"expected exactly one logits output, found {len(outputs)} ({names})")
    inp, out = inputs[0], outputs[0]
    channels, height, width = classifier_config.pixels_dims()

    if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
        got = TensorProto.DataType.Name(inp.type.tensor_type.elem_type)
        raise OnnxModelError(f"input {inp.name!r} is {got}; expected FLOAT (float32)")
    dims = _dims(inp)
    if dims is None or len(dims) != 4:
        raise OnnxModelError(
            f"input {inp.name!r} has shape {dims}; expected rank 4 NCHW [N, {channels}, {height}, {width}]"
        )
    if dims[1] != channels:
        hint = " (it looks like NHWC; an NCHW model is needed)" if dims[3] == channels else ""
        raise OnnxModelError(
            f"input {inp.name!r} has {dims[1]} channels in dim 1 (shape {dims}); expected {channels} (NCHW RGB){hint}"
        )
    for axis, size in ((2, height), (3, width)):
        if isinstance(dims[axis], int) and dims[axis] != size:
            raise OnnxModelError(
                f"input {inp.name!r} has spatial size {dims[2]}x{dims[3]}; the classifier is fed {height}x{width}"
            )
    if isinstance(dims[0], int) and dims[0] > 1:
        raise OnnxModelError(f"input {inp.name!r} has a static batch of {dims[0]}; expected 1 or dynamic")

    if out.type.tensor_type.elem_type != TensorProto.FLOAT:
        got = TensorProto.DataType.Name(out.type.tensor_type.elem_type)
        raise OnnxModelError(f"output {out.name!r} is {got}; expected FLOAT (float32)")
    out_dims = _dims(out)
    # An output without declared shape is judged when the model is run (check_runs).
    if out_dims is not None and (len(out_dims) != 2 or (isinstance(out_dims[1], int) and out_dims[1] != NUM_CLASSES)):
        raise OnnxModelError(f"output {out.name!r} has shape {out_dims}; expected [N, {NUM_CLASSES}]")


def _subgraphs(graph: onnx.GraphProto):
    """Yield `graph` and every graph nested in its nodes' attributes."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _subgraphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _subgraphs(g)


def _tensor_names(model: onnx.ModelProto) -> set:
    names = set()
    for g in _subgraphs(model.graph):
        names.update(i.name for i in g.input)
        names.update(o.name for o in g.output)
        names.update(t.name for t in g.initializer)
        names.update(v.name for v in g.value_info)
        for node in g.node:
            names.update(node.input)
            names.update(node.output)
    return names


def _rename_tensor(model: onnx.ModelProto, old: str, new: str) -> None:
    for g in _subgraphs(model.graph):
        for collection in (g.input, g.output, g.value_info, g.initializer):
            for item in collection:
                if item.name == old:
                    item.name = new
        for node in g.node:
            for seq in (node.input, node.output):
                for k, name in enumerate(seq):
                    if name == old:
                        seq[k] = new
        for annotation in g.quantization_annotation:
            if annotation.tensor_name == old:
                annotation.tensor_name = new


def rename_io(model: onnx.ModelProto, input_name: str = INPUT_NAME, output_name: str = OUTPUT_NAME) -> None:
    """Rename the model's single input and output in place."""
    for old, new in ((graph_inputs(model)[0].name, input_name), (model.graph.output[0].name, output_name)):
        if old == new:
            continue
        names = _tensor_names(model)
        if new in names:
            # An unrelated tensor already carries the name we need: move it aside first.
            spare = f"{new}__orig"
            while spare in names:
                spare += "_"
            _rename_tensor(model, new, spare)
        _rename_tensor(model, old, new)


def _constant_tensors(graph: onnx.GraphProto) -> dict:
    """Map tensor name -> TensorProto for initializers and Constant nodes with a `value`."""
    found = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    found[node.output[0]] = attr.t
    return found


def _patch_reshapes(model: onnx.ModelProto) -> list:
    """Let Reshapes with a hard-coded leading 1 copy the batch dim instead; return their names."""
    graph = model.graph
    constants = _constant_tensors(graph)
    uses = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    patched = []
    for n, node in enumerate(graph.node):
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        if any(a.name == "allowzero" and a.i == 1 for a in node.attribute):
            continue  # there 0 means a literal zero-sized dim, not "copy"
        shape = numpy_helper.to_array(constants[node.input[1]])
        if shape.ndim != 1 or shape.size == 0 or shape[0] != 1:
            continue
        new_shape = shape.copy()
        new_shape[0] = 0  # 0 = copy dim 0 of the Reshape's data input
        name = f"{node.input[1]}__batch{n}"
        graph.initializer.append(numpy_helper.from_array(new_shape, name))
        old_name, node.input[1] = node.input[1], name  # a fresh tensor: other users of the old shape keep it
        uses[old_name] -= 1
        if uses[old_name] == 0:
            _drop_constant(graph, old_name)
        patched.append(node.name or f"Reshape#{n}")
    return patched


def _drop_constant(graph: onnx.GraphProto, name: str) -> None:
    """Remove the now unused initializer or Constant node producing `name`."""
    if any(o.name == name for o in graph.output):
        return
    for k, t in enumerate(graph.initializer):
        if t.name == name:
            del graph.initializer[k]
            return
    for k, node in enumerate(graph.node):
        if node.op_type == "Constant" and list(node.output) == [name]:
            del graph.node[k]
            return


def _set_leading_dim_param(value_info, param: str) -> bool:
    dims = value_info.type.tensor_type.shape.dim
    if len(dims) and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
        dims[0].dim_param = param  # setting the oneof clears dim_value
        return True
    return False


def make_batch_dynamic(model: onnx.ModelProto) -> bool:
    """Turn a static batch of 1 on input and output into a symbolic one; True if changed."""
    changed = _set_leading_dim_param(graph_inputs(model)[0], BATCH_PARAM)
    if changed:
        _set_leading_dim_param(model.graph.output[0], BATCH_PARAM)
        # Intermediate shapes recorded for batch 1 would contradict batched runs.
        del model.graph.value_info[:]
    return changed


def _runner(model: onnx.ModelProto):
    """Return run(images) -> first output of `model` under ONNX Runtime on CPU."""
    import onnxruntime as ort

    # Failures are reported through OnnxModelError; keep ORT's own error log quiet.
    options = ort.SessionOptions()
    options.log_severity_level = 4
    run_options = ort.RunOptions()
    run_options.log_severity_level = 4
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    in_name, out_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    return lambda images: session.run([out_name], {in_name: images}, run_options)[0]


def check_runs(prepared: onnx.ModelProto, original: onnx.ModelProto, batch: int = 3) -> None:
    """Raise OnnxModelError unless `prepared` gives [batch, 1000] float32 logits equal to
    `original` run one image at a time."""
    rng = np.random.default_rng(0)
    shape = classifier_config.pixels_dims()
    images = rng.standard_normal((batch, *shape)).astype(np.float32)
    try:
        run_original = _runner(original)
        expected = np.concatenate([run_original(images[i : i + 1]) for i in range(batch)])
    except Exception as exc:  # ORT raises several unrelated types
        raise OnnxModelError(
            f"ONNX Runtime cannot run the model on a {'x'.join(map(str, (1, *shape)))} input: {exc}"
        ) from exc
    if expected.shape != (batch, NUM_CLASSES) or expected.dtype != np.float32:
        raise OnnxModelError(
            f"output has per-image shape {expected.shape[1:]} and dtype {expected.dtype}; expected ({NUM_CLASSES},) float32"
        )
    try:
        got = _runner(prepared)(images)
    except Exception as exc:
        raise OnnxModelError(f"the model does not run with a batch of {batch}: {exc}") from exc
    if got.shape != expected.shape:
        raise OnnxModelError(f"a batch of {batch} gave output shape {got.shape}; expected {expected.shape}")
    if not np.allclose(got, expected, rtol=1e-3, atol=1e-4):
        diff = float(np.abs(got - expected).max())
        raise OnnxModelError(f"batched results differ from one-at-a-time results (max |diff| {diff:.3g})")


def prepare(model: onnx.ModelProto) -> tuple:
    """Validate and rewrite `model`; return (prepared model, PrepareReport)."""
    validate(model)
    report = PrepareReport(graph_inputs(model)[0].name, model.graph.output[0].name)

    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    rename_io(prepared)
    report.batch_made_dynamic = make_batch_dynamic(prepared)
    if not report.batch_made_dynamic:
        check_runs(prepared, model)
        return prepared, report

    try:
        check_runs(prepared, model)
    except OnnxModelError as first:
        # The graph probably hard-codes batch 1 in a Reshape (a common flatten pattern).
        patched = onnx.ModelProto()
        patched.CopyFrom(prepared)
        report.reshapes_patched = _patch_reshapes(patched)
        if not report.reshapes_patched:
            raise OnnxModelError(f"cannot make the static batch of 1 dynamic: {first}") from first
        try:
            check_runs(patched, model)
        except OnnxModelError as second:
            raise OnnxModelError(f"cannot make the static batch of 1 dynamic: {second}") from second
        prepared = patched
    return prepared, report


def prepare_file(src: Path, dst: Path) -> PrepareReport:
    """Load the ONNX at `src`, prepare it and save it to `dst`; return what was done."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise OnnxModelError(f"{src}: no such file")
    try:
        model = onnx.load(str(src))
    except Exception as exc:  # protobuf decode errors have no common base worth naming
        raise OnnxModelError(f"{src}: cannot be read as ONNX: {exc}") from exc
    prepared, report = prepare(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(prepared, str(dst))
    return report


def describe(report: PrepareReport) -> str:
    """One line summarising a PrepareReport for humans."""
    parts = [
        f"input {report.original_input!r} -> {INPUT_NAME!r}",
        f"output {report.original_output!r} -> {OUTPUT_NAME!r}",
    ]
    parts.append("batch made dynamic" if report.batch_made_dynamic else "batch left as is")
    if report.reshapes_patched:
        parts.append(f"{len(report.reshapes_patched)} Reshape(s) patched to keep the batch")
    return "; ".join(parts)


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description="Validate an ImageNet classifier ONNX and adapt it for serving.")
    parser.add_argument("input", type=Path, help="ONNX file to prepare")
    parser.add_argument("--output", type=Path, help="where to write it (default: INPUT with .prepared.onnx)")
    args = parser.parse_args(argv)
    output = args.output or args.input.with_suffix(".prepared.onnx")
    try:
        report = prepare_file(args.input, output)
    except OnnxModelError as exc:
        print(f"prepare_onnx: {args.input}: {exc}", file=sys.stderr)
        return 1
    print(f"{describe(report)}\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
