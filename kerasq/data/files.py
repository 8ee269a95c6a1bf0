"""Load arrays for the command line: .npz, .npy, or a folder of images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerasq.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def load_arrays(
    path: str | Path, image_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y) from ``path``; ``y`` is None when the file has no labels.

    .npz: the inputs are the array ``x`` (or ``images`` / ``inputs``), or the only array when there is one;
    labels ``y`` (or ``labels`` / ``targets``) if present.
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
            x_key, y_key = _npz_keys(path, list(archive.keys()))
            return archive[x_key], (archive[y_key].reshape(-1) if y_key else None)
    if path.suffix == ".npy":
        return np.load(path), None
    raise DataError(f"unsupported data file {path.name!r}: use .npz, .npy or a folder of images")


_X_KEYS = ("x", "images", "inputs")
_Y_KEYS = ("y", "labels", "targets")


def _npz_keys(path: Path, keys: list[str]) -> tuple[str, str | None]:
    """(inputs key, labels key or None): a named input array, else the only array (unless it is labels)."""
    if not keys:
        raise DataError(f"{path} holds no arrays; save the inputs as x: np.savez(path, x=inputs, y=labels).")
    y_key = next((k for k in _Y_KEYS if k in keys), None)
    x_key = next((k for k in _X_KEYS if k in keys), None)
    if x_key is None and len(keys) == 1 and y_key is None:
        x_key = keys[0]
    if x_key is None:
        raise DataError(
            f"{path} holds the arrays {keys} but none is named x (or images / inputs), so the model inputs are "
            "ambiguous. Save the inputs under x: np.savez(path, x=inputs, y=labels)."
        )
    return x_key, y_key


def _load_image_folder(
    folder: Path, image_size: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    import tensorflow as tf

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {folder}")
    images = []
    for file in files:
        image = tf.io.decode_image(tf.io.read_file(str(file)), channels=3, expand_animations=False)
        if image_size is not None:
            image = tf.image.resize(image, image_size, method="bilinear")
        images.append(np.asarray(image, np.float32))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(
            f"images in {folder} have different sizes {sorted(shapes)}; the model input size is unknown. Resize "
            "them to one size, or use a model with a fixed input size (the images are then resized to it)."
        )
    classes = sorted({f.parent.name for f in files})
    labels = None
    if len(classes) > 1 and all(f.parent != folder for f in files):
        labels = np.array([classes.index(f.parent.name) for f in files])
    return np.stack(images), labels
