"""Benchmark peer: torch on the GPU, per image: Resize(256, antialias) + CenterCrop(224) + Normalize."""
import torch
import triton_python_backend_utils as pb_utils

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class TritonPythonModel:
    def initialize(self, args):
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}")
        self.mean = torch.tensor(MEAN, device=self.device).view(3, 1, 1)
        self.std = torch.tensor(STD, device=self.device).view(3, 1, 1)

    def preprocess(self, image):
        x = image.permute(2, 0, 1)[None].float()
        h, w = x.shape[-2:]
        size = (256, int(256 * w / h)) if h <= w else (int(256 * h / w), 256)
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        top, left = (size[0] - 224) // 2, (size[1] - 224) // 2
        x = x[:, top:top + 224, left:left + 224]
        return (x / 255.0 - self.mean) / self.std

    def execute(self, requests):
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "images")
            if tensor.is_cpu():
                batch = torch.from_numpy(tensor.as_numpy()).to(self.device)
            else:
                batch = torch.from_dlpack(tensor.to_dlpack())
            out = torch.stack([self.preprocess(img) for img in batch]).half().contiguous()  # the config's type
            torch.cuda.synchronize(self.device)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack("pixels", out)]))
        return responses
