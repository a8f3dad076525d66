"""Artifact I/O shared by every stage: atomic writes, CAM dicts, palette PNG masks, images, overlays, skip-if-done.

Artifact contracts (readable by the published SEAM/PSA/PPC scripts):
- CAM ``.npy``: ``np.save`` of a dict ``{class index without background (int): HxW float32 array}``.
- Label masks: palette (mode "P") PNG with the VOC colour palette, value 255 = ignore.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from wseg.errors import WsegError

# --------------------------------------------------------------------------------------------- atomic writes

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path next to ``path`` (same extension); rename it onto ``path`` on success.

    Readers never see a half-written file: a crash leaves only a hidden ``.tmp`` file, which is removed when the
    block raises and ignored by :func:`is_done`. Parent folders are created.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give artifacts the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def atomic_save_dict(path: str, table: Dict) -> None:
    """``np.save`` of a dict (a pickled ``.npy``: ``cls_labels.npy``, CAM dicts, predicted labels), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, table, allow_pickle=True)


def record_folder_settings(folder: str, settings: Dict, marker: str, flag: str,
                           suffixes: Tuple[str, ...] = (".png", ".npy"), record: Optional[str] = None) -> None:
    """Record ``settings`` (JSON) in ``folder/marker`` (or ``record``, for folders that must hold outputs only, such
    as an evaluation server's), or refuse a folder holding outputs (files ending in ``suffixes``) made with other
    settings, or with unknown ones (outputs but no record). Stages skip finished items by file name, so without this
    a re-run with other flags into the same folder would silently keep stale outputs. A record without outputs (a
    run that stopped before its first one) is simply replaced."""
    path = record or os.path.join(folder, marker)
    outputs = os.path.isdir(folder) and any(n.endswith(suffixes) for n in os.listdir(folder))
    old = None
    if os.path.isfile(path):
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = "unreadable"
        if old == settings:
            return
    if outputs and old is None:
        raise WsegError(f"{folder}: holds outputs of unknown settings (no {marker}); delete them or pass another "
                        f"{flag}")
    if outputs:
        diff = ([f"{k} {old.get(k)!r} -> {settings.get(k)!r}" for k in sorted(set(old) | set(settings))
                 if old.get(k) != settings.get(k)] if isinstance(old, dict) else [f"unreadable {marker}"])
        raise WsegError(f"{folder}: holds outputs made with other settings ({'; '.join(diff)}); delete the folder "
                        f"or pass another {flag}")
    atomic_write_text(path, json.dumps(settings, sort_keys=True) + "\n")


def is_done(path: str) -> bool:
    """True when ``path`` exists as a non-empty file (atomic writes make existence mean completeness)."""
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def pending_ids(ids: Sequence[str], outputs: Iterable[Tuple[Optional[str], str]]) -> List[str]:
    """Ids whose outputs are not all written yet; ``outputs`` is ``[(folder or None, extension), ...]``.

    Used by every per-image stage to skip finished work and resume after a crash.
    """
    outs = [(d, ext) for d, ext in outputs if d]
    return [i for i in ids if not all(is_done(os.path.join(d, i + ext)) for d, ext in outs)]


def require_file(path: str, what: str, fix: str) -> str:
    """Return ``path`` if it is an existing file, else raise a one-line :class:`WsegError`."""
    if not os.path.isfile(path):
        raise WsegError(f"{path}: {what} not found; {fix}")
    return path


def require_dir(path: str, what: str, fix: str) -> str:
    """Return ``path`` if it is an existing folder, else raise a one-line :class:`WsegError`."""
    if not path or not os.path.isdir(path):
        raise WsegError(f"{path}: {what} folder not found; {fix}")
    return path


# --------------------------------------------------------------------------------------------- palette masks


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map as an ``(n, 3)`` uint8 array (bit-interleaved label colours; 255 -> cream)."""
    idx = np.arange(n)
    pal = np.zeros((n, 3), np.int64)
    for bit in range(8):
        for ch in range(3):
            pal[:, ch] |= ((idx >> (bit * 3 + ch)) & 1) << (7 - bit)
    return pal.astype(np.uint8)


VOC_PALETTE = voc_palette()


def save_mask_png(path: str, mask: np.ndarray, palette: Optional[np.ndarray] = None) -> None:
    """Save a 2-D label map (values 0..254, 255 = ignore) as a palette PNG, atomically."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise WsegError(f"{path}: a label mask must be 2-D, got shape {mask.shape}")
    if mask.dtype != np.uint8:
        if mask.size and (mask.min() < 0 or mask.max() > 255):
            raise WsegError(f"{path}: label values must lie in [0, 255], got [{mask.min()}, {mask.max()}]")
        mask = mask.astype(np.uint8)
    img = Image.fromarray(mask, mode="P")
    img.putpalette((VOC_PALETTE if palette is None else palette).reshape(-1).tolist())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def load_mask_png(path: str) -> np.ndarray:
    """Load a label mask PNG as ``uint8 HxW`` (palette indices for mode "P", the values for grayscale)."""
    require_file(path, "mask", "check the folder and the image id, or re-run the stage that writes it")
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L", "I", "I;16"):
                raise WsegError(f"{path}: expected a palette or grayscale label PNG, got mode {img.mode}; "
                                "save masks as class indices (palette PNG), not colours")
            arr = np.asarray(img)
    except WsegError:
        raise
    except Exception as exc:  # corrupt or truncated file
        raise WsegError(f"{path}: cannot read mask ({exc.__class__.__name__}); delete it and re-run its stage")
    if arr.dtype != np.uint8:
        if arr.size and arr.max() > 255:
            raise WsegError(f"{path}: label values above 255 in a 16-bit PNG; save class indices as 8-bit")
        arr = arr.astype(np.uint8)
    return arr


def check_labels(mask: np.ndarray, num_classes: int, path: str) -> np.ndarray:
    """Raise a one-line error when ``mask`` holds labels outside ``[0, num_classes) ∪ {255}``."""
    bad = np.unique(mask[(mask >= num_classes) & (mask != 255)])
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:8])
        raise WsegError(f"{path}: labels {shown} outside [0, {num_classes}) and 255; "
                        f"check the class list (--classes) or regenerate the mask")
    return mask


def colorize_mask(mask: np.ndarray, palette: Optional[np.ndarray] = None) -> np.ndarray:
    """Label map -> ``HxWx3`` uint8 RGB with the VOC palette."""
    return (VOC_PALETTE if palette is None else palette)[np.asarray(mask, dtype=np.uint8)]


# --------------------------------------------------------------------------------------------- CAM dicts


def save_cam_dict(path: str, cams: Dict[int, np.ndarray]) -> None:
    """Save ``{class index without background: HxW}`` as float32 with ``np.save``, atomically."""
    atomic_save_dict(path, {int(k): np.asarray(v, dtype=np.float32) for k, v in cams.items()})


def load_dict(path: str, what: str, fix: str) -> Dict:
    """The dict of a pickled ``.npy`` (:func:`atomic_save_dict`'s counterpart; also the published scripts' files):
    one-line errors naming ``path``, ``what`` it should hold and the ``fix``, for a file that cannot be read or holds
    no dict."""
    try:
        obj = np.load(path, allow_pickle=True)
    except Exception as exc:
        raise WsegError(f"{path}: cannot read it as {what} ({exc.__class__.__name__}); {fix}") from None
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise WsegError(f"{path}: expected {what}, got {type(obj).__name__} {getattr(obj, 'shape', '')}; {fix}")
    return obj


def load_cam_dict(path: str, num_fg: Optional[int] = None,
                  shape: Optional[Tuple[int, int]] = None) -> Dict[int, np.ndarray]:
    """Load and validate a CAM dict written by wseg or by the published scripts: 2-D maps of one size, finite
    values, class-index keys (``num_fg``, the number of foreground classes, bounds them); ``shape`` (H, W) checks
    every map's size.
    """
    require_file(path, "CAM file", "run the CAM inference stage for this id (or check --cam_dir / --predict_dir)")
    obj = load_dict(path, "a CAM dict {class index: HxW array}",
                    "delete it and re-run inference (wseg writes CAMs with wseg.io.save_cam_dict)")
    cams: Dict[int, np.ndarray] = {}
    ref_shape = None
    for key, val in obj.items():
        try:
            k = int(key)
        except (TypeError, ValueError):
            raise WsegError(f"{path}: CAM dict key {key!r} is not a class index")
        arr = np.asarray(val)
        if arr.ndim != 2:
            raise WsegError(f"{path}: CAM for class {k} has shape {arr.shape}, expected HxW")
        if ref_shape is None:
            ref_shape = arr.shape
        if arr.shape != ref_shape:
            raise WsegError(f"{path}: CAMs of one image differ in size ({ref_shape} vs {arr.shape})")
        if not np.isfinite(arr).all():
            raise WsegError(f"{path}: CAM for class {k} holds NaN or inf values; re-run CAM inference (check the "
                            "model weights)")
        if k < 0 or (num_fg is not None and k >= num_fg):
            raise WsegError(f"{path}: CAM key {k} outside [0, {num_fg}) (keys are class indices without "
                            f"background); check --classes")
        cams[k] = arr.astype(np.float32, copy=False)
    if shape is not None and ref_shape is not None and tuple(ref_shape) != tuple(shape):
        raise WsegError(f"{path}: CAM size {ref_shape} differs from the image/mask size {tuple(shape)}; "
                        "the CAMs belong to other images or another resolution: re-run CAM inference")
    return cams


def cam_dict_to_stack(cams: Dict[int, np.ndarray], shape: Optional[Tuple[int, int]] = None
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """Sorted keys (int64) and their maps stacked as ``(K, H, W)`` float32 (``K`` may be 0 if ``shape`` given)."""
    keys = np.array(sorted(cams), dtype=np.int64)
    if len(keys):
        return keys, np.stack([cams[int(k)] for k in keys]).astype(np.float32, copy=False)
    if shape is None:
        raise WsegError("empty CAM dict and no image size given")
    return keys, np.zeros((0,) + tuple(shape), np.float32)


# --------------------------------------------------------------------------------------------- images


def load_image(path: str) -> np.ndarray:
    """Load an image as ``HxWx3`` uint8 RGB."""
    require_file(path, "image", "check --voc12_root and the list file")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as exc:
        raise WsegError(f"{path}: cannot read image ({exc.__class__.__name__}); the file is corrupt or not an image")


def save_image(path: str, rgb: np.ndarray, quality: int = 95) -> None:
    """Save an RGB uint8 image atomically (format from the extension; JPEG with ``quality``)."""
    img = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
    ext = os.path.splitext(path)[1].lower()
    with atomic_path(path) as tmp:
        if ext in (".jpg", ".jpeg"):
            img.save(tmp, format="JPEG", quality=quality)
        else:
            img.save(tmp)


# --------------------------------------------------------------------------------------------- pictures


def overlay_mask(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the palette colours of ``mask`` over ``image``; ignore (255) and background stay as the image."""
    img = np.asarray(image, np.float32)
    col = colorize_mask(mask).astype(np.float32)
    blend = ((mask > 0) & (mask < 255))[..., None]
    out = np.where(blend, (1 - alpha) * img + alpha * col, img)
    return out.clip(0, 255).astype(np.uint8)


def heatmap(cam: np.ndarray) -> np.ndarray:
    """A CAM in [0, 1] -> ``HxWx3`` uint8 RGB jet colour map (vectorised, no OpenCV needed)."""
    x = np.clip(np.asarray(cam, np.float32), 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return (np.stack([r, g, b], -1) * 255).astype(np.uint8)


def overlay_cam(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a CAM heat-map (values in [0, 1]) over ``image``."""
    out = (1 - alpha) * np.asarray(image, np.float32) + alpha * heatmap(cam).astype(np.float32)
    return out.clip(0, 255).astype(np.uint8)


def side_by_side(panels: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Concatenate RGB panels of equal height horizontally with a white gap (for overlay pictures)."""
    h = max(p.shape[0] for p in panels)
    cols = []
    for i, p in enumerate(panels):
        p = np.asarray(p, np.uint8)
        if p.ndim == 2:
            p = np.repeat(p[..., None], 3, -1)
        if p.shape[0] < h:
            p = np.concatenate([p, np.full((h - p.shape[0],) + p.shape[1:], 255, np.uint8)], 0)
        cols.append(p)
        if i + 1 < len(panels):
            cols.append(np.full((h, gap, 3), 255, np.uint8))
    return np.concatenate(cols, 1)


#: The stage that writes CAM dicts (named in the errors of the stages that read them).
CAM_STAGE = "scripts/contrast_infer.py --out_cam"


def missing_cams(cam_dir: str, ids: Sequence[str]) -> List[str]:
    return [i for i in ids if not os.path.isfile(os.path.join(cam_dir, i + ".npy"))]


def require_cams(cam_dir: str, ids: Sequence[str], stage: str) -> None:
    """One-line error when CAM files of ``ids`` are missing (naming the first and the stage that writes them)."""
    require_dir(cam_dir, "CAM", f"run {CAM_STAGE} {cam_dir} first (or fix --cam_dir)")
    missing = missing_cams(cam_dir, ids)
    if missing:
        raise WsegError(f"{os.path.join(cam_dir, missing[0] + '.npy')}: CAM file not found ({len(missing)} of "
                        f"{len(ids)} missing); run {CAM_STAGE} {cam_dir} on this list before {stage}")
