"""The reference photos through a served ensemble: each top-1 must be one the photo's label allows."""
from __future__ import annotations

from pixelserve.build import reference_images


def assert_reference_top1(client, model: str = "image_classifier") -> None:
    """Send every photo of ``reference_images.EXPECTED_TOP1`` to ``model`` with a tritonclient gRPC ``client``
    and check its top-1 class."""
    import tritonclient.grpc as grpcclient

    for name, expected in reference_images.EXPECTED_TOP1.items():
        image = reference_images.load_photo(name)
        inp = grpcclient.InferInput("images", [1, *image.shape], "UINT8")
        inp.set_data_from_numpy(image[None])
        scores = client.infer(model, [inp]).as_numpy("predictions")[0]
        assert int(scores.argmax()) in expected, name
