"""A folder of images, one sub-folder per class, as a data source (read with Pillow,
which matplotlib already brings)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from veilfl.errors import DataError
from veilfl.ml.data_sources.settings import DEFAULT_EVAL_FRACTION, ImageMode
from veilfl.ml.datasets import ArrayDataset

__all__ = ["IMAGE_SUFFIXES", "ImageFolderSource"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""The files an image folder's class sub-folders are read for (other files are skipped)."""


@dataclass(frozen=True)
class ImageFolderSource:
    """``FOLDER/CLASS/IMAGE``: every image in a class's sub-folder has that class.

    Classes are numbered alike on every client: sub-folders named by numbers
    (``0``, ``1``, ...) are those labels; otherwise the sub-folders' names, sorted, are
    numbered 0..K-1, so every client needs the same sub-folders (an empty one will do).
    Each image is resized to ``size`` x ``size`` and scaled to [0, 1]: the examples
    have shape ``(1, size, size)`` in gray, ``(3, size, size)`` in RGB.

    Attributes:
        folder: The folder of class sub-folders.
        size: Pixels a side after resizing.
        mode: One gray channel or three RGB channels.
        default_eval_fraction: The share a client holds out for evaluation by default.
    """

    folder: Path
    size: int = 28
    mode: ImageMode = "gray"
    default_eval_fraction: float = DEFAULT_EVAL_FRACTION

    @property
    def description(self) -> str:
        return f"{self.folder}/ (images)"

    def classes(self) -> dict[str, int]:
        """Each class sub-folder's name and label.

        Raises:
            DataError: if the folder holds no sub-folders.
        """
        names = sorted(p.name for p in self.folder.iterdir() if p.is_dir())
        if not names:
            raise DataError(
                f"{self.folder} has no class sub-folders; put each class's images in a "
                "sub-folder of its own (FOLDER/CLASS/IMAGE.png)."
            )
        if all(name.isdigit() for name in names):
            return {name: int(name) for name in names}
        return {name: label for label, name in enumerate(names)}

    def load(self) -> ArrayDataset:
        from PIL import Image, UnidentifiedImageError

        pil_mode = "L" if self.mode == "gray" else "RGB"
        images: list[np.ndarray] = []
        labels: list[int] = []
        for name, label in self.classes().items():
            for path in sorted((self.folder / name).iterdir()):
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                try:
                    with Image.open(path) as image:
                        pixels = image.convert(pil_mode).resize((self.size, self.size))
                        array = np.asarray(pixels, dtype=np.float32) / np.float32(255.0)
                except (OSError, UnidentifiedImageError) as exc:
                    raise DataError(f"{path} cannot be read as an image ({exc}).") from None
                images.append(array[np.newaxis] if array.ndim == 2 else array.transpose(2, 0, 1))
                labels.append(label)
        if not images:
            raise DataError(
                f"{self.folder}'s class sub-folders hold no images ({', '.join(IMAGE_SUFFIXES)})."
            )
        return ArrayDataset(
            images=np.stack(images).astype(np.float32, copy=False),
            labels=np.array(labels, dtype=np.int64),
        )
