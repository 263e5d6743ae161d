"""Write a small image-folder data set of drawn shapes: ``FOLDER/train/CLASS/*.png``
and ``FOLDER/test/CLASS/*.png`` with classes ``circle``, ``square`` and ``triangle``
(28 x 28 gray images, each shape at a random place and size).

Run: python write_images.py shapes [--per-class 60]
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")


def draw(kind: str, rng: np.random.Generator) -> Image.Image:
    image = Image.new("L", (28, 28), 0)
    pen = ImageDraw.Draw(image)
    size = int(rng.integers(8, 14))
    x, y = (int(v) for v in rng.integers(2, 26 - size, size=2))
    box = (x, y, x + size, y + size)
    if kind == "circle":
        pen.ellipse(box, fill=255)
    elif kind == "square":
        pen.rectangle(box, fill=255)
    else:
        pen.polygon([(x + size // 2, y), (x, y + size), (x + size, y + size)], fill=255)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--per-class", type=int, default=60, help="training images per class")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for split, count in (("train", args.per_class), ("test", max(1, args.per_class // 4))):
        for kind in CLASSES:
            folder = args.folder / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(count):
                draw(kind, rng).save(folder / f"{number:04d}.png")
    print(f"wrote {args.folder}/train and {args.folder}/test ({', '.join(CLASSES)})")


if __name__ == "__main__":
    main()
