"""Benchmark peer: OpenCV on the CPU, per image: resize shorter side to 256 (INTER_AREA) + crop + normalise."""
import cv2
import numpy as np
import triton_python_backend_utils as pb_utils

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def preprocess(image):
    h, w = image.shape[:2]
    size = (int(256 * w / h), 256) if h <= w else (256, int(256 * h / w))  # cv2 takes (width, height)
    x = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    top, left = (x.shape[0] - 224) // 2, (x.shape[1] - 224) // 2
    x = x[top:top + 224, left:left + 224].astype(np.float32)
    return ((x / 255.0 - MEAN) / STD).transpose(2, 0, 1)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "images")
            if tensor.is_cpu():
                batch = tensor.as_numpy()
            else:
                import torch

                batch = torch.from_dlpack(tensor.to_dlpack()).cpu().numpy()
            out = np.ascontiguousarray(np.stack([preprocess(img) for img in batch]), np.float16)  # the config's type
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("pixels", out)]))
        return responses
