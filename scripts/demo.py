"""Build the repository for this host (pixelserve-build), serve it on a local tritonserver, classify real photos
(HTTP and gRPC)."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import skimage.data
from PIL import Image

from pixelserve.client.classify import main as classify
from pixelserve.triton_local import LocalTritonServer

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def write_sample_photos(folder: Path) -> list[Path]:
    """Save scikit-image's real photographs as JPEG files, as a user would have them."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name in PHOTOS:
        path = folder / f"{name}.jpg"
        Image.fromarray(getattr(skimage.data, name)()[..., :3]).save(path, quality=95)
        files.append(path)
    return files


def main() -> int:
    """Run the demo; exit code 0 when every photo was classified."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="auto", choices=["auto", "cpu", "gpu-torch", "gpu-tensorrt"])
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "pixelserve.build.build_repository", "--target", args.target], cwd=ROOT, check=True)
    files = [str(p) for p in write_sample_photos(ROOT / "artifacts" / "samples")]
    print("Starting tritonserver on model_repository/ ...", flush=True)
    with LocalTritonServer([ROOT / "model_repository"]) as server:
        print(f"ready: HTTP {server.http_url}  gRPC {server.grpc_url}\n", flush=True)
        status = 0
        for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
            print(f"== {protocol.upper()} ==", flush=True)
            status |= classify([*files, "--protocol", protocol, "--url", url, "--top-k", str(args.top_k)])
        return status


if __name__ == "__main__":
    sys.exit(main())
