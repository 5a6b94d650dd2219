"""perf.shipped_settings reads preprocess's settings as the served model does (one place: its config.pbtxt)."""
from pixelserve.build import classifier_config, model_config
from pixelserve.perf.shipped_settings import preprocess_settings
from pixelserve.model_runtime.parameters import RESERVE_PARAMETER, image_size_parameter
from pixelserve.model_runtime.tensors import PIXELS


def test_settings_follow_the_config_they_read(tmp_path):
    """Every value comes from the file: a copy with other values gives those values."""
    edited = model_config.read_config(classifier_config.PREPROCESS_CONFIG)
    edited.max_batch_size = 5
    (pixels,) = [o for o in edited.output if o.name == PIXELS]
    pixels.dims[:] = [3, 160, 192]
    pixels.data_type = model_config.pb2().TYPE_FP32
    edited.parameters["crop_fraction"].string_value = "0.9"
    edited.parameters[RESERVE_PARAMETER].string_value = "480x640"
    path = model_config.write_config(tmp_path / "config.pbtxt", edited, [])
    parameters, spec, max_batch = preprocess_settings(path)
    assert max_batch == 5
    assert (spec.out_height, spec.out_width, spec.output_dtype, spec.crop_fraction) == (160, 192, "float32", 0.9)
    assert image_size_parameter(parameters, RESERVE_PARAMETER) == (480, 640)


def test_shipped_settings_are_those_the_served_models_take():
    parameters, spec, _ = preprocess_settings()
    assert spec.output_dtype == "float16"  # the pixels output's TYPE_FP16: the classifier runs in FP16
    assert image_size_parameter(parameters, RESERVE_PARAMETER) is not None  # GPU instances size buffers at load
