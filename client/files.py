"""Which files a command-line path stands for."""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

# Common still-image formats, limited below to those this Pillow build can open.
_COMMON_EXTENSIONS = {
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".avif", ".qoi", ".jp2", ".j2k", ".psd", ".sgi", ".pcx",
}


def image_extensions() -> frozenset[str]:
    """Lower-case file extensions (with the dot) that count as images when scanning folders."""
    openable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return frozenset(_COMMON_EXTENSIONS & openable)


def expand_path(path: str | os.PathLike[str]) -> list[Path]:
    """The files ``path`` stands for: itself unless it is a folder, else the image files under it.

    Folders are scanned recursively in sorted order, by file extension; hidden files and folders
    (names starting with '.') are skipped. A non-folder path is returned as is, even if missing,
    so that reading it reports the problem.
    """
    root = Path(path)
    if not root.is_dir():
        return [root]
    extensions = image_extensions()
    found: list[Path] = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                found.append(Path(folder) / name)
    return found
