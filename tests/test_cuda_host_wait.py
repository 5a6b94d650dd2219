"""How a model process waits for the GPU (pixelserve.model_runtime.cuda_host_wait, parameter gpu_host_wait).

The setting is read and checked on every host (a bad value refuses a served model's load:
tests/test_preprocess_reload_served.py). Its effect, a waiting thread that spins on a core or sleeps, is measured
on a GPU: a process's CPU time while it waits for a GPU job of about 0.3 s.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO_ROOT

from pixelserve.build import classifier_config, model_config
from pixelserve.model_runtime.cuda_host_wait import HOST_WAIT_FLAGS, HOST_WAIT_PARAMETER, host_wait_parameter


def test_the_setting_is_one_of_cudas_scheduling_modes():
    assert host_wait_parameter({}) == "auto"  # CUDA's own choice when absent
    assert host_wait_parameter({HOST_WAIT_PARAMETER: " Block "}) == "block"
    for bad in ("", "sleep", "4", "blocking_sync"):
        with pytest.raises(ValueError, match=f"{HOST_WAIT_PARAMETER}=.*auto, spin, yield, block"):
            host_wait_parameter({HOST_WAIT_PARAMETER: bad})
    assert HOST_WAIT_FLAGS == {"auto": 0, "spin": 1, "yield": 2, "block": 4}  # CUctx_flags in cuda.h


def test_every_python_backend_step_takes_preprocess_setting():
    preprocess = model_config.read_config(classifier_config.PREPROCESS_CONFIG)
    shipped = preprocess.parameters[HOST_WAIT_PARAMETER].string_value
    assert shipped == "auto"  # what every H100 row of docs/performance.md was measured with
    for flavour in ("onnxruntime", "torch"):
        config = classifier_config.classifier_config(flavour)
        assert config.parameters[HOST_WAIT_PARAMETER].string_value == shipped, flavour
    for encoded in (False, True):
        one_step = classifier_config.one_step_config("torch", encoded=encoded)
        assert one_step.parameters[HOST_WAIT_PARAMETER].string_value == shipped


# A child process, so that the setting comes before the process's first CUDA call, as in a model's load.
WAIT_PROBE = """
import sys, time
from pixelserve.model_runtime.cuda_host_wait import set_host_wait
flag, was_active = set_host_wait(0, sys.argv[1])
import torch
torch.cuda.init()
torch.cuda._sleep(1000)
torch.cuda.synchronize()
wall, cpu = time.perf_counter(), time.process_time()
torch.cuda._sleep(int(6e8))  # 6e8 GPU clock cycles: about 0.3 s at an H100's 1.98 GHz
torch.cuda.synchronize()
print(flag, int(was_active), time.perf_counter() - wall, time.process_time() - cpu)
"""


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["spin", "block"])
def test_a_waiting_process_spins_or_sleeps_as_set(mode):
    result = subprocess.run([sys.executable, "-c", WAIT_PROBE, mode], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    flag, was_active, wall, cpu = result.stdout.split()[-4:]
    print(f"{mode}: context flag {flag}, waited {float(wall) * 1e3:.0f} ms with {float(cpu) * 1e3:.0f} ms of CPU")
    assert int(flag) == HOST_WAIT_FLAGS[mode] and was_active == "0"
    assert float(wall) > 0.05, "the GPU job was too short to tell"
    share = float(cpu) / float(wall)
    if mode == "spin":
        assert share > 0.7  # a core kept busy for the whole wait
    else:
        assert share < 0.2  # asleep until the GPU was done
