"""pixelserve-build (build/build_repository.py): the committed configs are the CPU build's, a GPU build writes the
per-host configs and the manifest that every server on the repository then serves, and nothing else."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODEL_REPOSITORY, REPO_ROOT

from pixelserve.build import build_repository, classifier_config, model_config, place_instances
from pixelserve.triton_local import LocalTritonServer, launch
from pixelserve.triton_local.build_manifest import CONFIG_NAME, MANIFEST_NAME, read_manifest

MODELS = ("preprocess", "classifier", "image_classifier", "image_classifier_encoded")
GENERATED = {"classifier": lambda: classifier_config.render_config("onnxruntime"),
             "image_classifier": lambda: classifier_config.render_ensemble(encoded=False),
             "image_classifier_encoded": lambda: classifier_config.render_encoded("onnxruntime")}


def _tracked(path: Path) -> bool:
    result = subprocess.run(["git", "ls-files", "--error-unmatch", str(path.relative_to(REPO_ROOT))], cwd=REPO_ROOT,
                            capture_output=True)  # fmt: skip
    return result.returncode == 0


@pytest.mark.parametrize("model", sorted(GENERATED))
def test_committed_configs_are_what_the_cpu_build_writes(model):
    """A Triton user opening model_repository/ reads what is served on a CPU host: the committed file is the
    writer's output byte for byte (regenerate with pixelserve-build when this fails)."""
    path = MODEL_REPOSITORY / model / "config.pbtxt"
    assert _tracked(path), f"{path} is not committed"
    committed = subprocess.run(["git", "show", f"HEAD:{path.relative_to(REPO_ROOT)}"], cwd=REPO_ROOT,
                               capture_output=True, text=True)  # fmt: skip
    if committed.returncode != 0:  # added but not yet committed: compare the index's copy
        committed = subprocess.run(["git", "show", f":{path.relative_to(REPO_ROOT)}"], cwd=REPO_ROOT,
                                   capture_output=True, text=True, check=True)  # fmt: skip
    assert committed.stdout == GENERATED[model](), f"{path}: the committed file differs from the CPU build's"


def test_nothing_in_the_repository_that_the_cpu_build_does_not_load():
    """The one-step model's code lives in build/models/ and is put in the repository only by a gpu-torch build."""
    assert not _tracked(MODEL_REPOSITORY / "image_classifier_encoded" / "1" / "model.py")
    assert not _tracked(MODEL_REPOSITORY / "image_classifier" / "1" / "model.py")
    assert build_repository.ONE_STEP_SOURCE.is_file() and _tracked(build_repository.ONE_STEP_SOURCE)
    assert not list(MODEL_REPOSITORY.glob(f"*/configs/{CONFIG_NAME}.pbtxt")) or \
        read_manifest(MODEL_REPOSITORY).config_name == CONFIG_NAME  # only a GPU build leaves per-host configs


@pytest.fixture(scope="module")
def gpu_build(tmp_path_factory):
    """The shipped repository copied and built for gpu-torch on 2 GPUs (throughput), as on a CPU host for a GPU one."""
    repository = tmp_path_factory.mktemp("built") / "model_repository"
    shutil.copytree(MODEL_REPOSITORY, repository, ignore=shutil.ignore_patterns("__pycache__", "configs", MANIFEST_NAME))
    before = {model: (repository / model / "config.pbtxt").read_bytes() for model in MODELS}
    result = subprocess.run([sys.executable, "-m", "pixelserve.build.build_repository", "--target", "gpu-torch",
                             "--gpus", "2", "--repository", str(repository)], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return repository, before, result.stdout


def test_gpu_build_places_the_throughput_profile_on_every_gpu(gpu_build):
    repository, _, stdout = gpu_build
    per_gpu = place_instances.load_per_gpu(profile="throughput")
    kind_gpu = model_config.pb2().ModelInstanceGroup.Kind.Value("KIND_GPU")
    for model in ("preprocess", "classifier", "image_classifier", "image_classifier_encoded"):
        config = model_config.read_config(repository / model / "configs" / f"{CONFIG_NAME}.pbtxt")
        groups = [(g.kind, g.count, list(g.gpus)) for g in config.instance_group]
        assert groups == [(kind_gpu, per_gpu[model], [0]), (kind_gpu, per_gpu[model], [1])], model
        assert f"{model}: GPU 0 x{per_gpu[model]}, GPU 1 x{per_gpu[model]}" in stdout
    classifier = model_config.read_config(repository / "classifier" / "configs" / f"{CONFIG_NAME}.pbtxt")
    assert classifier.parameters["runtime"].string_value == "torch"
    inputs = {}
    for model in ("image_classifier", "image_classifier_encoded"):  # each the one step, with its code beside it
        config = model_config.read_config(repository / model / "configs" / f"{CONFIG_NAME}.pbtxt")
        assert config.backend == "python" and not config.platform, model
        assert (repository / model / "1" / "model.py").read_bytes() == build_repository.ONE_STEP_SOURCE.read_bytes()
        inputs[model] = [(i.name, model_config.pb2().DataType.Name(i.data_type), list(i.dims), i.allow_ragged_batch)
                         for i in config.input]
    # the same inputs as the ensembles they stand in for
    assert inputs == {"image_classifier": [("images", "TYPE_UINT8", [-1, -1, 3], True)],
                      "image_classifier_encoded": [("images", "TYPE_STRING", [1], False)]}


def test_gpu_build_leaves_the_portable_configs_and_writes_a_manifest(gpu_build):
    repository, before, _ = gpu_build
    for model in MODELS:
        assert (repository / model / "config.pbtxt").read_bytes() == before[model], model
    manifest = read_manifest(repository)
    assert manifest is not None and (manifest.target, manifest.flavour, manifest.gpus) == ("gpu-torch", "torch", 2)
    pool = place_instances.load_settings()["cuda_memory_pool_bytes"]
    assert manifest.server_args == [f"--model-config-name={CONFIG_NAME}", f"--cuda-memory-pool-byte-size=0:{pool}",
                                    f"--cuda-memory-pool-byte-size=1:{pool}"]  # fmt: skip
    assert manifest.mps and manifest.instances["preprocess"] == {0: 8, 1: 8}
    assert json.loads((repository / MANIFEST_NAME).read_text())["versions"]["numba"]


def test_every_server_serves_the_build(gpu_build):
    """LocalTritonServer (pixelserve-server, the tests, run_perf, scaling) and the container's entry point add the
    build's arguments; an argument given by hand wins over the build's."""
    repository, _, _ = gpu_build
    manifest = read_manifest(repository)
    command = LocalTritonServer([repository]).command()
    assert all(arg in command for arg in manifest.server_args)
    mine = LocalTritonServer([repository], extra_args=["--model-config-name=mine"]).command()
    assert "--model-config-name=mine" in mine and f"--model-config-name={CONFIG_NAME}" not in mine
    container = launch.command([f"--model-repository={repository}"])
    assert all(arg in container for arg in manifest.server_args)


def test_latency_profile_and_a_cpu_build_after_a_gpu_one(tmp_path):
    repository = tmp_path / "model_repository"
    shutil.copytree(MODEL_REPOSITORY, repository, ignore=shutil.ignore_patterns("__pycache__", "configs", MANIFEST_NAME))
    base = [sys.executable, "-m", "pixelserve.build.build_repository", "--repository", str(repository)]
    subprocess.run([*base, "--target", "gpu-torch", "--gpus", "1", "--profile", "latency"], check=True, capture_output=True)
    preprocess = model_config.read_config(repository / "preprocess" / "configs" / f"{CONFIG_NAME}.pbtxt")
    assert [g.count for g in preprocess.instance_group] == [place_instances.load_per_gpu(profile="latency")["preprocess"]]
    subprocess.run([*base, "--target", "cpu"], check=True, capture_output=True)
    assert not list(repository.glob("*/configs/*.pbtxt")) and not (repository / "image_classifier_encoded" / "1" / "model.py").exists()
    manifest = read_manifest(repository)
    assert manifest.target == "cpu" and manifest.server_args == [] and not manifest.mps
    assert "--model-config-name" not in " ".join(LocalTritonServer([repository]).command())


def test_a_gpu_target_without_gpus_says_how_to_build_for_another_host(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pixelserve.build.build_repository", "--target", "gpu-torch",
                             "--gpus", "0", "--repository", str(tmp_path)], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1 and "--gpus N" in result.stderr


def test_the_benchmarks_serve_the_build_and_place_nothing_themselves():
    """run_device.sh builds with pixelserve-build and serves model_repository/ as built; no benchmark-only placement."""
    script = (REPO_ROOT / "perf" / "run_device.sh").read_text()
    assert "place_instances" not in script and "pixelserve.build.build_repository" in script


def test_scaling_serves_the_gpu_build_placed_for_each_gpu_count(gpu_build, tmp_path, capsys):
    """perf/scaling.py measures what a host with N GPUs serves: the build placed again for N (pixelserve-build
    --place-only), its per-host configs shown; no placement of its own."""
    from pixelserve.perf import scaling

    repository, _, _ = gpu_build
    args = scaling.parse_args(["--dry-run", "--max-gpus", "4", "--repository", str(repository)])
    step = scaling.prepare_step(args, 4, ["0", "1", "2", "3"], tmp_path, {})
    assert step.placements["preprocess"] == {gpu: 8 for gpu in range(4)}
    assert read_manifest(step.repository).gpus == 4 and read_manifest(repository).gpus == 2
    assert scaling.placement_command(step).startswith("pixelserve-build --place-only --gpus 4")
    assert "gpus: [3]" in scaling.instance_group_text(step, "preprocess")
    assert scaling.main(["--dry-run", "--max-gpus", "2", "--repository", str(repository)]) == 0
    assert "pixelserve-build --place-only --gpus 2" in capsys.readouterr().out


def test_place_only_places_an_existing_gpu_build_again(gpu_build, tmp_path):
    repository = tmp_path / "model_repository"
    shutil.copytree(gpu_build[0], repository, symlinks=True)
    result = subprocess.run([sys.executable, "-m", "pixelserve.build.build_repository", "--place-only", "--gpus", "3",
                             "--repository", str(repository)], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert read_manifest(repository).instances["classifier"] == {0: 3, 1: 3, 2: 3}
    assert "GPU 2 x3" in result.stdout
