"""perf.shipped_settings reads preprocess's settings as the served model does (one place: its config.pbtxt)."""
from pixelserve.build import classifier_config
from pixelserve.perf.shipped_settings import preprocess_settings


def test_settings_are_the_configs():
    parameters, spec, max_batch = preprocess_settings()
    assert max_batch == classifier_config.max_batch_size()
    assert (spec.out_height, spec.out_width) == classifier_config.INPUT_DIMS[1:]
    assert spec.output_dtype == "float16"  # the pixels output's TYPE_FP16
    assert parameters["reserve_image_size"] and float(parameters["crop_fraction"]) == spec.crop_fraction
