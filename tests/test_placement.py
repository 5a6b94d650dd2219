"""Instances placed per GPU (build/place_instances.py) and the multi-GPU scaling driver (perf/scaling.py)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from conftest import HAS_GPU, MODEL_REPOSITORY

from pixelserve.build import classifier_config, model_config, place_instances
from pixelserve.perf import scaling, scaling_report

REPO_ROOT = Path(__file__).resolve().parent.parent

PER_GPU = place_instances.load_per_gpu()
KIND_GPU = model_config_pb2.ModelInstanceGroup.Kind.Value("KIND_GPU")


_parse = model_config.read_config


def _classifier_on_host() -> bool:
    return place_instances.host_reason(_parse(MODEL_REPOSITORY / "classifier" / "config.pbtxt")) is not None


@pytest.fixture(scope="module")
def placed(tmp_path_factory):
    """The shipped repository placed for 1, 2, 4 and 8 GPUs, each in its own copy."""
    root = tmp_path_factory.mktemp("placed")
    results = {}
    for n in (1, 2, 4, 8):
        results[n] = place_instances.place_repository(MODEL_REPOSITORY, list(range(n)), PER_GPU, output=root / f"{n}gpu")
    return root, results


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_placement_for_n_gpus_is_one_group_per_gpu(placed, n):
    root, results = placed
    repo = root / f"{n}gpu"
    outcome = {r.model: r.placed for r in results[n]}
    assert outcome["preprocess"] is True
    assert outcome["classifier"] is (not _classifier_on_host())
    placements = place_instances.validate_placement(repo, n)
    assert placements["preprocess"] == {gpu: PER_GPU["preprocess"] for gpu in range(n)}
    groups = _parse(repo / "preprocess" / "config.pbtxt").instance_group
    assert [(g.kind, g.count, list(g.gpus)) for g in groups] == [(KIND_GPU, PER_GPU["preprocess"], [gpu]) for gpu in range(n)]


@pytest.mark.parametrize("n", [1, 8])
def test_only_the_instance_group_changes(placed, n):
    repo = placed[0] / f"{n}gpu"
    for model in ("preprocess", "classifier", "image_classifier"):
        before, after = _parse(MODEL_REPOSITORY / model / "config.pbtxt"), _parse(repo / model / "config.pbtxt")
        before.ClearField("instance_group")
        after.ClearField("instance_group")
        assert after == before, model
    header = (repo / "preprocess" / "config.pbtxt").read_text().splitlines()[0]
    assert header == f"# Written by pixelserve.build.place_instances: {PER_GPU['preprocess']} instance(s) per GPU on GPU {', '.join(map(str, range(n)))}."
    for model in ("classifier", "image_classifier"):  # a host model and the ensemble are not touched at all
        if model == "image_classifier" or _classifier_on_host():
            assert (repo / model / "config.pbtxt").read_bytes() == (MODEL_REPOSITORY / model / "config.pbtxt").read_bytes()
    model_py = Path("preprocess", "1", "model.py")
    assert (repo / model_py).read_bytes() == (MODEL_REPOSITORY / model_py).read_bytes()
    assert not list(repo.rglob("__pycache__"))
    onnx = repo / "classifier" / "1" / "model.onnx"
    if (MODEL_REPOSITORY / "classifier" / "1" / "model.onnx").exists():
        assert onnx.is_symlink() and onnx.resolve() == (MODEL_REPOSITORY / "classifier" / "1" / "model.onnx").resolve()


def test_placed_config_replaces_every_instance_group_entry_and_keeps_the_rest():
    config = model_config.parse_config(
        'name: "m"\n'
        'instance_group { count: 2 kind: KIND_CPU }\n'
        'parameters: { key: "note" value: { string_value: "instance_group [ {" } }\n'
        'instance_group { count: 1 }\n'
        'max_batch_size: 8\n'
    )
    placed = place_instances.placed_config(config, [0, 1], 3)
    assert [(g.kind, g.count, list(g.gpus)) for g in placed.instance_group] == [(KIND_GPU, 3, [0]), (KIND_GPU, 3, [1])]
    assert placed.parameters["note"].string_value == "instance_group [ {"
    assert (placed.name, placed.max_batch_size) == ("m", 8)
    assert len(config.instance_group) == 2  # the source message is left as it was


def test_config_without_instance_group_gets_one():
    placed = place_instances.placed_config(model_config.parse_config('name: "m"\nbackend: "python"'), [2], 1)
    assert [(g.kind, list(g.gpus)) for g in placed.instance_group] == [(KIND_GPU, [2])]
    assert placed.backend == "python"


def test_tensorrt_classifier_is_placed_one_per_gpu(tmp_path):
    repo = place_instances.copy_repository(MODEL_REPOSITORY, tmp_path / "repo")
    (repo / "classifier" / "config.pbtxt").write_text(classifier_config.render_config("tensorrt"))
    (repo / "image_classifier_encoded" / "config.pbtxt").write_text(classifier_config.render_encoded("tensorrt"))
    results = place_instances.place_repository(repo, [0, 1, 2, 3], PER_GPU)
    # with TensorRT both products are ensembles: no instances of their own
    assert {r.model: r.placed for r in results} == {"preprocess": True, "classifier": True, "image_classifier": False,
                                                    "image_classifier_encoded": False}
    assert place_instances.validate_placement(repo, 4)["classifier"] == {gpu: PER_GPU["classifier"] for gpu in range(4)}
    assert classifier_config.contract_problems((repo / "classifier" / "config.pbtxt").read_text(), "tensorrt") == []


def test_onnxruntime_classifier_is_left_alone_with_a_message(tmp_path):
    repo = place_instances.copy_repository(MODEL_REPOSITORY, tmp_path / "repo")
    (repo / "classifier" / "config.pbtxt").write_text(classifier_config.render_config("onnxruntime"))
    results = {r.model: r for r in place_instances.place_repository(repo, [0, 1], PER_GPU)}
    assert not results["classifier"].placed and "KIND_CPU" in results["classifier"].message
    assert (repo / "classifier" / "config.pbtxt").read_text() == classifier_config.render_config("onnxruntime")


def test_command_line_in_place_and_output(tmp_path, capsys):
    repo = place_instances.copy_repository(MODEL_REPOSITORY, tmp_path / "repo")
    assert place_instances.main(["--gpu-count", "2", "--repository", str(repo)]) == 0
    assert place_instances.validate_placement(repo, 2)["preprocess"] == {0: PER_GPU["preprocess"], 1: PER_GPU["preprocess"]}
    out = tmp_path / "out"
    argv = ["--gpus", "1,3", "--per-gpu", "preprocess=2", "--repository", str(MODEL_REPOSITORY), "--output", str(out)]
    assert place_instances.main(argv) == 0
    assert "preprocess: GPU 1 x2, GPU 3 x2" in capsys.readouterr().out
    assert place_instances.validate_placement(out, 4, {"preprocess": 2}, gpus=[1, 3])["preprocess"] == {1: 2, 3: 2}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--gpus", "0,1,1"], "duplicate GPU ids [1]"),
        (["--gpus", "0,-1"], "must be >= 0"),
        (["--gpu-count", "2", "--per-gpu", "preprocess=0"], "instances per GPU must be >= 1"),
        (["--gpu-count", "0"], "--gpu-count must be >= 1"),
    ],
)
def test_command_line_refuses_bad_requests(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert place_instances.main([*argv, "--output", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_bad_per_gpu_syntax_and_outputs_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        place_instances.parse_args(["--gpu-count", "2", "--per-gpu", "preprocess:4"])
    with pytest.raises(place_instances.PlacementError, match="not be inside"):
        place_instances.copy_repository(MODEL_REPOSITORY, MODEL_REPOSITORY / "copy")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(place_instances.PlacementError, match="not empty"):
        place_instances.copy_repository(MODEL_REPOSITORY, tmp_path / "busy")


def test_validation_catches_bad_placements(placed, tmp_path):
    four = placed[0] / "4gpu"
    with pytest.raises(place_instances.PlacementError, match="GPU id 3 is outside 0..1"):
        place_instances.validate_placement(four, 2)
    expected = r"instances on GPUs \[0, 1, 2, 3\], expected GPUs \[0, 1, 2, 3, 4, 5, 6, 7\]"
    with pytest.raises(place_instances.PlacementError, match=expected):
        place_instances.validate_placement(four, 8)
    repo = place_instances.copy_repository(MODEL_REPOSITORY, tmp_path / "repo")
    config = repo / "preprocess" / "config.pbtxt"
    twice = model_config.read_config(config)
    twice.ClearField("instance_group")
    twice.instance_group.add(count=4, kind=KIND_GPU, gpus=[0])
    twice.instance_group.add(count=2, kind=KIND_GPU, gpus=[0])
    model_config.write_config(config, twice, [])
    with pytest.raises(place_instances.PlacementError) as caught:
        place_instances.validate_placement(repo, 1)
    assert "GPU 0 appears in more than one" in str(caught.value) and f"has 2 instance(s), expected {PER_GPU['preprocess']}" in str(caught.value)
    config.write_text("name: [broken")
    with pytest.raises(place_instances.PlacementError, match="preprocess: not a valid config.pbtxt"):
        place_instances.validate_placement(repo, 1)


@pytest.mark.server
@pytest.mark.skipif(HAS_GPU, reason="on a GPU host the load succeeds: test_gpu_server_loads_the_placement covers it")
def test_tritonserver_parses_the_generated_config(placed):
    """On a CPU host Triton must get as far as assigning instance preprocess_0 to GPU 0: the file parsed."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from pixelserve.triton_local import LocalTritonServer

    with LocalTritonServer([placed[0] / "2gpu"], extra_args=["--model-control-mode=explicit"]) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException) as caught:
            client.load_model("preprocess", headers=server.admin_headers)
    assert "instance group preprocess_0 of model preprocess specifies invalid or unsupported gpu id 0" in str(caught.value)


@pytest.mark.gpu
@pytest.mark.server
def test_gpu_server_loads_the_placement(placed):
    """Device machine: the 1-GPU placement loads and Triton reports 4 preprocess instances on GPU 0."""
    import tritonclient.grpc as grpcclient

    from pixelserve.triton_local import LocalTritonServer

    args = ["--model-control-mode=explicit", "--load-model=preprocess"]
    with LocalTritonServer([placed[0] / "1gpu"], extra_args=args) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert client.is_model_ready("preprocess")
        groups = client.get_model_config("preprocess", as_json=True)["config"]["instance_group"]
    assert [(g["kind"], g["count"], [int(x) for x in g["gpus"]]) for g in groups] == [("KIND_GPU", PER_GPU["preprocess"], [0])]


def test_scaling_dry_run_plans_and_validates_8_gpus(capsys):
    assert scaling.main(["--dry-run", "--max-gpus", "8"]) == 0
    out = capsys.readouterr().out
    for n, devices, concurrency in ((1, "0", 32), (2, "0,1", 64), (4, "0,1,2,3", 128), (8, "0,1,2,3,4,5,6,7", 256)):
        assert f"== {n} GPU(s): CUDA_VISIBLE_DEVICES={devices}, concurrency {concurrency}" in out
        # The validated line names every placed model (the classifier too where it runs on the GPU).
        validated = out.split(f"== {n} GPU(s)")[1].split("validated: ")[1].splitlines()[0]
        assert "preprocess: " + ", ".join(f"GPU {g} x{PER_GPU['preprocess']}" for g in range(n)) in validated
        assert f"--concurrency-range {concurrency} --shared-memory cuda" in out
    # the classifier where it runs on the GPU, image_classifier_encoded where it is a model, not an ensemble
    placed_models = len([m for m in PER_GPU
                         if place_instances.host_reason(_parse(MODEL_REPOSITORY / m / "config.pbtxt")) is None])
    assert out.count("kind: KIND_GPU") == placed_models * (1 + 2 + 4 + 8)
    assert "gpus: [7]" in out and "--size 1080x1920" in out and "--load-model=preprocess" in out


def test_scaling_refuses_more_gpus_than_visible(capsys):
    visible = len(scaling.nvidia_smi_gpus())
    assert scaling.main(["--max-gpus", str(visible + 1)]) == 2
    assert f"`nvidia-smi -L` lists {visible} GPU(s)" in capsys.readouterr().err
    assert scaling.main(["--dry-run", "--max-gpus", "4", "--counts", "2,4"]) == 2
    assert "must include 1" in capsys.readouterr().err
    assert scaling.main(["--dry-run", "--max-gpus", "2", "--counts", "1,4"]) == 2


def test_gpu_counts_and_visible_devices():
    assert scaling.default_counts(8) == [1, 2, 4, 8]
    assert scaling.default_counts(6) == [1, 2, 4, 6]
    assert scaling.default_counts(1) == [1]
    listed = ["GPU 0: H200", "GPU 1: H200"]
    assert scaling.visible_devices(listed, {}) == ["0", "1"]
    assert scaling.visible_devices(listed, {"CUDA_VISIBLE_DEVICES": "3,1"}) == ["3", "1"]
    assert scaling.visible_devices(listed, {"CUDA_VISIBLE_DEVICES": "2,-1,0"}) == ["2"]


SYNTHETIC = [(1, 1000.0), (2, 1900.0), (4, 3600.0), (8, 6400.0)]


def _points():
    return [scaling_report.ScalingPoint(gpus=n, throughput=t, concurrency=32 * n, p50_ms=5.0, p99_ms=9.0,
                                        cuda_visible_devices=",".join(map(str, range(n)))) for n, t in SYNTHETIC]  # fmt: skip


def test_efficiency_csv_markdown_and_plot(tmp_path):
    assert scaling_report.efficiencies(_points()) == pytest.approx({1: 1.0, 2: 0.95, 4: 0.9, 8: 0.8})
    paths = scaling_report.write_results(tmp_path / "scaling-x", _points(), {"run": "python -m pixelserve.perf.scaling"},
                                         ["perf_analyzer -m preprocess"], ["a note"])  # fmt: skip
    md, csv_path, plot = paths
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r["gpus"]), float(r["efficiency"]), float(r["per_gpu_infer_s"])) for r in rows] == [
        (1, 1.0, 1000.0), (2, 0.95, 950.0), (4, 0.9, 900.0), (8, 0.8, 800.0)]  # fmt: skip
    text = md.read_text()
    assert "| 8 | 0,1,2,3,4,5,6,7 | 256 | 6400 | 800 | 8000 | 0.80 |" in text
    assert f"![throughput per GPU count]({plot.name})" in text and "perf_analyzer -m preprocess" in text
    assert plot.suffix == ".png" and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_efficiency_is_blank_without_a_one_gpu_point():
    points = [p for p in _points() if p.gpus != 1]
    assert scaling_report.efficiencies(points) == {}
    assert all(row["efficiency"] is None for row in scaling_report.table_rows(points))


def test_one_step_encoded_model_is_placed_like_preprocess(tmp_path):
    """With the torch flavour image_classifier_encoded is a Python-backend model of its own, placed on every GPU."""
    repo = place_instances.copy_repository(MODEL_REPOSITORY, tmp_path / "repo")
    (repo / "image_classifier_encoded" / "config.pbtxt").write_text(classifier_config.render_encoded("torch"))
    results = {r.model: r for r in place_instances.place_repository(repo, [0, 1], PER_GPU)}
    assert results["image_classifier_encoded"].placed
    placed = _parse(repo / "image_classifier_encoded" / "config.pbtxt")
    count = PER_GPU["image_classifier_encoded"]
    assert [(g.kind, g.count, list(g.gpus)) for g in placed.instance_group] == [(KIND_GPU, count, [0]), (KIND_GPU, count, [1])]
    assert placed.backend == "python" and placed.output[0].label_filename == "labels.txt"
