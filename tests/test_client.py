"""The client (CLI and Python API) against the real tritonserver on the shipped repository: files sent as their
encoded bytes (the default) or as pixels decoded here (--send raw), arrays as pixels."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from images import PHOTO_NAMES, photo, uncached_jpeg
from model_stats import moved, request_counts

from pixelserve.client import (
    ImageClassifierClient,
    ImageReadError,
    InferenceFailed,
    InvalidImage,
    Prediction,
    load_image,
    parse_classification,
)
from pixelserve.client.classify import EXIT_MODEL_NOT_READY, EXIT_OK, EXIT_SOME_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, main
from pixelserve.client.files import expand_path
from pixelserve.client.transport import PROTOCOL_NAMES
from pixelserve.triton_local import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTOCOLS = ("http", "grpc")
CAT_INDICES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
RAW, ENCODED = "image_classifier", "image_classifier_encoded"
SENDS = {"encoded": [], "raw": ["--send", "raw"]}  # the default, and the option


def server_url(server, protocol: str) -> str:
    return server.http_url if protocol == "http" else server.grpc_url


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder: chelsea.jpg, notes.txt, sub/coffee.png, .hidden/chelsea.png (skipped when scanning)."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    (root / ".hidden").mkdir()
    Image.fromarray(skimage.data.chelsea()).save(root / "chelsea.jpg", quality=95)
    Image.fromarray(skimage.data.coffee()).save(root / "sub" / "coffee.png")
    Image.fromarray(skimage.data.chelsea()).save(root / ".hidden" / "chelsea.png")
    (root / "notes.txt").write_text("not an image\n")
    return root


@pytest.fixture
def fresh_photos(tmp_path) -> list[Path]:
    """The real photos as JPEG files that no earlier request of the session sent, so the response cache has
    no answer for them and every step of an ensemble runs."""
    files = []
    for name in PHOTO_NAMES:
        (tmp_path / f"{name}.jpg").write_bytes(uncached_jpeg(photo(name), quality=95))
        files.append(tmp_path / f"{name}.jpg")
    return files


def top1(entry: dict) -> int:
    return entry["predictions"][0]["index"]


def run_json(capsys, args: list[str]) -> tuple[int, list[dict], str]:
    code = main([*args, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


# --- no server needed ---------------------------------------------------------------------------


def test_parse_classification():
    assert parse_classification(b"12.5:285:Egyptian_cat") == Prediction(285, "Egyptian_cat", 12.5)
    assert parse_classification("-1.25:7:a:b") == Prediction(7, "a:b", -1.25)
    assert parse_classification(b"3:9") == Prediction(9, "", 3.0)
    with pytest.raises(ValueError):
        parse_classification(b"garbage")


def test_load_image_applies_exif_orientation(tmp_path):
    upright = skimage.data.chelsea()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: stored rotated, display rotated 90 degrees clockwise
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rotated.png", exif=exif)
    np.testing.assert_array_equal(load_image(tmp_path / "rotated.png"), upright)


def test_load_image_converts_modes(tmp_path):
    gray16 = np.full((4, 5), 0x8000, np.uint16)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    assert (load_image(tmp_path / "gray16.png") == 0x80).all()
    rgba = np.zeros((4, 5, 4), np.uint8)  # fully transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    loaded = load_image(tmp_path / "clear.png")
    assert loaded.shape == (4, 5, 3) and loaded.dtype == np.uint8 and (loaded == 255).all()


def test_load_image_names_the_bad_file(photos):
    with pytest.raises(ImageReadError, match="notes.txt: not an image"):
        load_image(photos / "notes.txt")
    with pytest.raises(ImageReadError, match="missing.png: no such file"):
        load_image(photos / "missing.png")


def test_expand_path_finds_images_recursively(photos):
    assert expand_path(photos) == [photos / "chelsea.jpg", photos / "sub" / "coffee.png"]
    assert expand_path(photos / "notes.txt") == [photos / "notes.txt"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cli_unreachable_server(protocol, photos, capsys):
    url = f"127.0.0.1:{free_port()}"
    code = main([str(photos / "chelsea.jpg"), "--protocol", protocol, "--url", url, "--timeout", "10", "--json"])
    out, err = capsys.readouterr()
    assert code == EXIT_UNREACHABLE
    assert f"cannot reach Triton at {url} over" in err
    assert "Traceback" not in out + err
    assert out == ""


def test_cli_unreachable_server_subprocess(photos):
    url = f"127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "client.classify", str(photos / "chelsea.jpg"), "--url", url, "--timeout", "10"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == EXIT_UNREACHABLE
    assert f"cannot reach Triton at {url} over HTTP" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_cli_help_documents_exit_codes_and_what_is_sent(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "exit status" in out and "cannot reach the Triton server" in out
    assert "--send {encoded,raw}" in out and "--shared-memory cuda sends raw pixels" in out


def test_cli_refuses_encoded_bytes_through_cuda_shared_memory(photos, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(photos / "chelsea.jpg"), "--output", "x.jsonl", "--shared-memory", "cuda", "--send", "encoded"])
    assert exit_info.value.code == EXIT_USAGE
    assert "--shared-memory cuda sends raw pixels" in capsys.readouterr().err


# --- real server ----------------------------------------------------------------------------------


@pytest.mark.server
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cli_classifies_photos(triton_server, protocol, photos, capsys):
    files = [str(photos / "chelsea.jpg"), str(photos / "sub" / "coffee.png")]
    code, results, err = run_json(capsys, [*files, "--protocol", protocol, "--url", server_url(triton_server, protocol)])
    assert code == EXIT_OK, err
    assert [r["file"] for r in results] == files
    assert top1(results[0]) in CAT_INDICES
    assert top1(results[1]) == ESPRESSO
    for result in results:
        assert len(result["predictions"]) == 5
        scores = [p["score"] for p in result["predictions"]]
        assert scores == sorted(scores, reverse=True)
        assert all(isinstance(p["label"], str) and p["label"] for p in result["predictions"])


@pytest.mark.server
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cli_plain_output(triton_server, protocol, photos, capsys):
    chelsea, coffee = photos / "chelsea.jpg", photos / "sub" / "coffee.png"
    url = server_url(triton_server, protocol)
    code = main([str(chelsea), str(coffee), "--protocol", protocol, "--url", url, "--top-k", "3"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    blocks = out.strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [str(chelsea), str(coffee)]
    ranked = [re.findall(r"^\s+\d+\.\s+\S+\s+.+ \((\d+)\)$", b, re.M) for b in blocks]
    assert [len(r) for r in ranked] == [3, 3]
    assert int(ranked[0][0]) in CAT_INDICES and int(ranked[1][0]) == ESPRESSO


@pytest.mark.server
def test_cli_folder_input(triton_server, photos, capsys):
    code, results, err = run_json(capsys, [str(photos), "--url", triton_server.http_url, "--concurrency", "2"])
    assert code == EXIT_OK, err
    # notes.txt (not an image extension) and .hidden/ are not picked up from a folder
    assert [r["file"] for r in results] == [str(photos / "chelsea.jpg"), str(photos / "sub" / "coffee.png")]
    assert top1(results[0]) in CAT_INDICES and top1(results[1]) == ESPRESSO


# What each bad file is told: by the server (preprocess, decoding) when the bytes are sent, by the client otherwise.
BAD_FILE_ERRORS = {
    "encoded": {"notes.txt": "server error: in ensemble 'image_classifier_encoded', input 'encoded': not a JPEG or PNG image",
                "cut.jpg": "server error: in ensemble 'image_classifier_encoded', input 'encoded': undecodable JPEG image",
                "empty.png": "server error: in ensemble 'image_classifier_encoded', input 'encoded': encoded image is empty"},
    "raw": {"notes.txt": "not an image file", "cut.jpg": "cannot decode image", "empty.png": "not an image file"},
}  # fmt: skip


@pytest.mark.server
@pytest.mark.parametrize("send", SENDS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cli_bad_file_does_not_stop_the_others(triton_server, protocol, send, photos, tmp_path, capsys):
    jpeg = (photos / "chelsea.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 3])  # a download cut short
    (tmp_path / "empty.png").write_bytes(b"")
    files = [str(photos / "chelsea.jpg"), str(photos / "notes.txt"), str(tmp_path / "cut.jpg"), str(tmp_path / "empty.png"),
             str(photos / "sub" / "coffee.png")]  # fmt: skip
    url = server_url(triton_server, protocol)
    code, results, err = run_json(capsys, [*files, "--protocol", protocol, "--url", url, *SENDS[send]])
    assert code == EXIT_SOME_FAILED
    assert "Traceback" not in err
    assert [r["file"] for r in results] == files
    assert top1(results[0]) in CAT_INDICES and top1(results[4]) == ESPRESSO
    for result in results[1:4]:
        expected = BAD_FILE_ERRORS[send][Path(result["file"]).name]
        assert result["predictions"] == [] and result["error"].startswith(expected), result
        assert f"{result['file']}: {expected}" in err


@pytest.mark.server
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cli_tells_to_send_other_formats_as_pixels(triton_server, protocol, tmp_path, capsys):
    Image.fromarray(skimage.data.chelsea()).save(tmp_path / "cat.webp")
    url = server_url(triton_server, protocol)
    assert main([str(tmp_path / "cat.webp"), "--protocol", protocol, "--url", url]) == EXIT_SOME_FAILED
    err = capsys.readouterr().err
    assert re.fullmatch(r"pixelserve-classify: \S+cat\.webp: server error: .*not a JPEG or PNG image .*; it is a WEBP image: "
                        r"the server decodes only JPEG and PNG; send it as pixels: --send raw\n", err), err
    assert main([str(tmp_path / "cat.webp"), "--protocol", protocol, "--url", url, "--send", "raw"]) == EXIT_OK


@pytest.mark.server
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cli_reports_server_error_for_one_image(triton_server, protocol, photos, tmp_path, capsys):
    # Far beyond the preprocess model's max_image_side (8192): the server rejects this one request.
    wide = tmp_path / "wide.png"
    Image.fromarray(np.full((2, 100_000, 3), 128, np.uint8)).save(wide)
    chelsea = str(photos / "chelsea.jpg")
    url = server_url(triton_server, protocol)
    code = main([str(wide), chelsea, "--protocol", protocol, "--url", url])
    out, err = capsys.readouterr()
    assert code == EXIT_SOME_FAILED
    assert re.search(r"wide\.png: server error: .*above the maximum side of 8192 pixels", err)  # preprocess's header check
    assert "Traceback" not in err
    assert out.startswith(chelsea + "\n")


@pytest.mark.server
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cli_model_not_found(triton_server, protocol, photos, capsys, monkeypatch):
    from pixelserve.triton_local.access import KEY_ENV

    url = server_url(triton_server, protocol)
    args = [str(photos / "chelsea.jpg"), "--protocol", protocol, "--url", url, "--model", "no_such_model"]
    monkeypatch.delenv(KEY_ENV, raising=False)
    # The model's metadata route is open: the client learns that there is no such model without the key ...
    assert main(args) == EXIT_MODEL_NOT_READY
    out, err = capsys.readouterr()
    assert err == f"pixelserve-classify: model 'no_such_model' not found on {url} over {PROTOCOL_NAMES[protocol]}\n"
    assert out == ""
    monkeypatch.setenv(KEY_ENV, triton_server.admin_key)
    code = main(args)
    out, err = capsys.readouterr()
    assert code == EXIT_MODEL_NOT_READY
    assert f"model 'no_such_model' not found on {url}" in err
    assert "; its models: " in err and "image_classifier_encoded" in err  # with the key, the repository index lists them
    assert out == "" and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.server
def test_cli_subprocess(triton_server, photos):
    proc = subprocess.run(
        [sys.executable, "-m", "client.classify", str(photos), str(photos / "notes.txt"),
         "--protocol", "grpc", "--url", triton_server.grpc_url, "--json", "--top-k", "2"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == EXIT_SOME_FAILED, proc.stderr
    results = json.loads(proc.stdout)
    assert [Path(r["file"]).name for r in results] == ["chelsea.jpg", "coffee.png", "notes.txt"]
    assert top1(results[0]) in CAT_INDICES and top1(results[1]) == ESPRESSO
    assert len(results[0]["predictions"]) == 2
    assert "notes.txt: server error: " in proc.stderr and "not a JPEG or PNG" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.server
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("send", SENDS)
def test_cli_sends_the_files_bytes_unless_told_raw(triton_server, protocol, send, fresh_photos, capsys):
    before = request_counts(triton_server, RAW, ENCODED)
    files = [str(f) for f in fresh_photos]
    code, results, err = run_json(capsys, [*files, "--protocol", protocol, "--url", server_url(triton_server, protocol),
                                           *SENDS[send]])  # fmt: skip
    assert code == EXIT_OK, err
    assert top1(results[0]) in CAT_INDICES and top1(results[1]) == ESPRESSO
    n, none = len(files), {"success": 0, "fail": 0, "inferences": 0}
    answered = {"success": n, "fail": 0, "inferences": n}
    if send == "encoded":  # decoded by the server (in preprocess); the raw ensemble sees nothing
        expected = {ENCODED: answered, RAW: none}
    else:
        expected = {ENCODED: none, RAW: answered}
    after = request_counts(triton_server, RAW, ENCODED, until=lambda counts: moved(before, counts) == expected)
    assert moved(before, after) == expected


@pytest.mark.server
def test_encoded_and_raw_agree_on_the_real_photos(triton_server, tmp_path, capsys):
    files = []
    for name in PHOTO_NAMES:
        Image.fromarray(photo(name)).save(tmp_path / f"{name}.jpg", quality=90)
        files.append(str(tmp_path / f"{name}.jpg"))
    answers = {}
    for send, flags in SENDS.items():
        code, answers[send], err = run_json(capsys, [*files, "--url", triton_server.http_url, *flags])
        assert code == EXIT_OK, err
    assert [top1(r) for r in answers["encoded"]] == [top1(r) for r in answers["raw"]]
    assert top1(answers["encoded"][0]) in CAT_INDICES and top1(answers["encoded"][1]) == ESPRESSO
    for encoded, raw in zip(answers["encoded"], answers["raw"]):  # both decode with PIL: the same pixels
        np.testing.assert_allclose([p["score"] for p in encoded["predictions"]], [p["score"] for p in raw["predictions"]],
                                   atol=1e-3)  # fmt: skip


@pytest.mark.server
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_api_classify(triton_server, protocol, photos):
    with ImageClassifierClient(server_url(triton_server, protocol), protocol) as client:
        client.check_ready()
        cat = client.classify(skimage.data.chelsea(), top_k=3)
        assert len(cat) == 3 and cat[0].index in CAT_INDICES and cat[0].label
        assert client.classify((photos / "chelsea.jpg").read_bytes(), top_k=1)[0].index in CAT_INDICES
        assert client.classify(photos / "sub" / "coffee.png", top_k=1)[0].index == ESPRESSO
        with pytest.raises(InvalidImage):
            client.classify(np.zeros((8, 8), np.uint8))
        with pytest.raises(InferenceFailed, match="encoded image is empty"):
            client.classify(b"")


@pytest.mark.server
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_api_takes_bytes_paths_and_arrays_in_one_call(triton_server, protocol, photos):
    chelsea_jpg, coffee_png = photos / "chelsea.jpg", photos / "sub" / "coffee.png"
    items = [
        chelsea_jpg.read_bytes(),  # bytes: encoded
        str(coffee_png),  # a path as str: read, sent encoded
        chelsea_jpg,  # a Path: the same
        skimage.data.coffee(),  # an array: raw pixels
        b"definitely not an image",  # bytes the server cannot decode
        photos / "missing.jpg",  # a path that cannot be read
    ]
    before = request_counts(triton_server, RAW, ENCODED)
    with ImageClassifierClient(server_url(triton_server, protocol), protocol, concurrency=3) as client:
        outcomes = list(client.classify_many(items, top_k=1))
    delta = moved(before, request_counts(triton_server, RAW, ENCODED))
    assert [o.item is i for o, i in zip(outcomes, items)] == [True] * len(items)
    assert [o.predictions[0].index in expected for o, expected in zip(outcomes, [CAT_INDICES, [ESPRESSO]] * 2)] == [True] * 4
    assert isinstance(outcomes[4].error, InferenceFailed) and "not a JPEG or PNG image" in str(outcomes[4].error)
    assert isinstance(outcomes[5].error, ImageReadError) and "missing.jpg: no such file" in str(outcomes[5].error)
    assert (delta[ENCODED]["success"], delta[RAW]["success"]) == (3, 1)  # bytes and paths encoded, the array raw
    assert delta[ENCODED]["fail"] >= 1


@pytest.mark.server
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_api_classify_many_keeps_order(triton_server, protocol):
    images = [skimage.data.chelsea(), skimage.data.coffee(), np.zeros((8, 8, 4), np.uint8)] * 4
    with ImageClassifierClient(server_url(triton_server, protocol), protocol, concurrency=4) as client:
        outcomes = list(client.classify_many(images, top_k=1))
    assert [o.item is i for o, i in zip(outcomes, images)] == [True] * len(images)
    for n, outcome in enumerate(outcomes):
        if n % 3 == 2:
            assert isinstance(outcome.error, InvalidImage) and outcome.predictions == []
        else:
            assert outcome.ok and outcome.predictions[0].index in (CAT_INDICES if n % 3 == 0 else [ESPRESSO])


@pytest.mark.parametrize("status, unreachable", [("503", True), ("StatusCode.UNAVAILABLE", True), ("400", False)])
def test_a_server_restarting_behind_the_http_guard_counts_as_unreachable(status, unreachable):
    """HTTP 503 (the guard while Triton restarts) is retried like gRPC UNAVAILABLE; a refusal (400) is not."""
    from tritonclient.utils import InferenceServerException

    from pixelserve.client.errors import ServerUnreachable
    from pixelserve.client.transport import parse_endpoint, translate_error

    error = translate_error(InferenceServerException("server restarting", status=status),
                            parse_endpoint("localhost:8000", "http"), timeout=5)
    assert isinstance(error, ServerUnreachable) is unreachable, error
