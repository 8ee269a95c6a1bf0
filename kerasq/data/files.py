"""Load arrays for the command line: .npz, .npy, or a folder of images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def load_arrays(
    path: str | Path, image_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y) from ``path``; ``y`` is None when the file has no labels.

    .npz: arrays ``x`` (or ``images``, or the first array) and ``y`` (or ``labels``) if present.
    .npy: one array of inputs. A directory: every image file in it (sorted by name), resized to
    ``image_size``; labels come from sub-folder names when images sit in one folder per class.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data path {str(path)!r} does not exist")
    if path.is_dir():
        return _load_image_folder(path, image_size)
    if path.suffix == ".npz":
        with np.load(path) as archive:
            keys = list(archive.keys())
            if not keys:
                raise ValueError(f"{path} holds no arrays")
            x_key = next((k for k in ("x", "images", "inputs") if k in keys), keys[0])
            y_key = next((k for k in ("y", "labels", "targets") if k in keys), None)
            return archive[x_key], (archive[y_key].reshape(-1) if y_key else None)
    if path.suffix == ".npy":
        return np.load(path), None
    raise ValueError(f"unsupported data file {path.name!r}: use .npz, .npy or a folder of images")


def _load_image_folder(
    folder: Path, image_size: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    import tensorflow as tf

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {folder}")
    images = []
    for file in files:
        image = tf.io.decode_image(tf.io.read_file(str(file)), channels=3, expand_animations=False)
        if image_size is not None:
            image = tf.image.resize(image, image_size, method="bilinear")
        images.append(np.asarray(image, np.float32))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(
            f"images in {folder} have different sizes {sorted(shapes)}; the model input size is unknown"
        )
    classes = sorted({f.parent.name for f in files})
    labels = None
    if len(classes) > 1 and all(f.parent != folder for f in files):
        labels = np.array([classes.index(f.parent.name) for f in files])
    return np.stack(images), labels
