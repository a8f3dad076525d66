"""RS+EPM inference as released: seeds from the segmentation head (``infer_rsepm.py``) and their CRF pseudo masks
(``convert_seed_to_pseudo_masks.py``), OFRIN/RecurSeed_and_EdgePredictMix HEAD df538e2.

**Seeds** (:func:`infer_image`, :func:`make_seed`), per image at full resolution, ImageNet-normalised:

1. every scale of ``1.0, 0.5, 1.5, 2.0`` resizes the image bilinearly to ``int(h * s) x int(w * s)`` and runs it
   with its mirror (8 passes);
2. the segmentation logits are resized to the scaled input (``same=True``) with ``interpolation`` (released:
   **nearest**), softmaxed, resized again (same mode) to the size of the first scale's output and un-mirrored;
   the 8 maps are averaged (then bilinearly resized to the image when ``same=False``);
3. class probabilities = mean over the passes of ``sigmoid(GAP(cams))``; the image's classes are those with
   probability ``>= conf_th``, or its ground-truth labels when ``conf_th == -1`` (the released default, for train
   seeds; the README passes 0.34 for validation/test);
4. seed = the **foreground** softmax channels (the background channel is dropped), each divided by its spatial
   maximum + 1e-5, kept for the selected classes; ``keys = [0, class + 1 ...]``.

Released file: ``{pred_dir}predictions/{tag}/{domain}/{id}.pkl`` = ``pickle`` of ``{'keys': int64 (K + 1,),
'seed': float32 (K, H, W)}`` (``train_aug`` seeds go to ``train/``). wseg also writes / reads them as CAM dicts
(``.npy``, ``{class index without background: HxW}``), which ``scripts/eval.py --type npy`` scores.

**Pseudo masks** (:func:`seed_to_pseudo`): background ``(1 - max_k seed_k)^2`` stacked before the seeds (or a
constant ``bg_th``; nothing when the tag holds ``MS``: multi-stage seeds carry their own background), dense CRF with
10 mean-field iterations, Gaussian ``sxy=1, compat=3``, bilateral ``sxy=67, srgb=3, compat=4`` on the RGB image as
the released ``Denormalize`` gives it back (normalised float32, de-normalised in float64, truncated to uint8), argmax,
``keys[...]``; no class -> all background. ``mode != 'crf'``: constant ``bg_th`` and argmax, no CRF.

**Evaluation** (``evaluate.py``): seeds are scored with a constant background score swept over 0.10..0.80 by
0.05, mIoU = nan-mean over classes with a non-empty union: ``scripts/eval.py --type npy --curve --start 0.10 --end
0.80 --step 0.05 --absent nan`` on the ``.npy`` seeds; pseudo masks with ``--type png --absent nan``.
"""
from __future__ import annotations

import io as _io
import os
import pickle
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from wseg.errors import WsegError
from wseg.models.heads.rsepm import resize_as_released

#: ``infer_rsepm.py`` test scales, in the released order (the first fixes the size of the averaged map).
SCALES = (1.0, 0.5, 1.5, 2.0)
#: ``--conf_th`` default: -1 = use the ground-truth image labels; the README uses 0.34 for validation / test.
CONF_GT = -1.0
README_CONF_TH = 0.34
SEED_EPS = 1e-5                       # torch_utils.normalize
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: convert_seed_to_pseudo_masks.py crf_dict['deeplab'] (lines 77-84), in wseg.crf.crf_inference's keywords.
CRF_PARAMS = dict(t=10, pos_w=3, pos_xy_std=1, bi_w=4, bi_xy_std=67, bi_rgb_std=3)
BG_GAMMA = 2.0
#: evaluate.py --st_th / --end_th / --th_interval for seeds ('predictions' folders).
EVAL_START, EVAL_END, EVAL_STEP = 0.10, 0.80, 0.05
TAG = "ResNet50@RS(ep=5, cam=1.0, seg=1.0)+CF(c=0.55, u=0.10)+CM(ep=15, cls=1.0, cam=1.0, seg=1.0)"
SEED_EXTS = (".pkl", ".npy")


# --------------------------------------------------------------------------------------------- images


def normalize_image(rgb: np.ndarray) -> np.ndarray:
    """``augment_utils.Normalize`` + ``Transpose``: uint8 ``(H, W, 3)`` RGB -> float32 ``(3, H, W)``, computed in
    float32 as released (``x / 255. - mean``, ``/ std`` per channel)."""
    x = np.asarray(rgb, dtype=np.float32)
    norm = (x / np.float32(255.0) - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(norm.transpose(2, 0, 1))


def released_crf_image(rgb: np.ndarray) -> np.ndarray:
    """The image the released CRF sees: ``Denormalize()(Normalize()(image))`` = float32 normalisation, float64
    de-normalisation, ``* 255`` truncated to uint8 (a few pixels end one level lower than in the file)."""
    norm = normalize_image(rgb).transpose(1, 2, 0)
    back = norm * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)
    return np.ascontiguousarray((back * 255).astype(np.uint8))


def scaled_size(h: int, w: int, scale: float) -> Tuple[int, int]:
    """``torch_utils.resize(..., scale=s)``: ``int(h * s), int(w * s)`` (truncated)."""
    return int(h * scale), int(w * scale)


def stride4_size(h: int, w: int) -> Tuple[int, int]:
    """Size of the stride-4 map (7x7/2 stem convolution, 3x3/2 max-pool) of an ``h x w`` input."""
    def down(n: int) -> int:
        return (n - 1) // 2 + 1
    return down(down(h)), down(down(w))


# --------------------------------------------------------------------------------------------- seeds


@torch.no_grad()
def infer_image(net, image: torch.Tensor, scales: Sequence[float] = SCALES, hflip: bool = True, same: bool = True,
                interpolation: str = "nearest", device: Optional[torch.device] = None,
                amp: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """``RSEPM.forward_with_scales`` + the resize of ``infer_rsepm.py``: ``image`` normalised ``(3, H, W)``.
    Returns ``(pred_class (C,), pred_mask (C + 1, H, W))``: mean class probabilities and mean softmax maps."""
    from wseg.tta import multiscale_flip

    device = device or image.device
    if interpolation not in ("nearest", "bilinear"):
        raise WsegError(f"--interpolation {interpolation}: choose nearest (released) or bilinear")
    if not scales:
        raise WsegError("no test scales: give at least one scale (released 1.0 0.5 1.5 2.0)")
    image = image.to(device, torch.float32)
    h, w = image.shape[-2:]
    sizes = [scaled_size(h, w, s) for s in scales]
    if min(min(s) for s in sizes) < 1:
        raise WsegError(f"image of {h}x{w} pixels: scale {min(scales):g} leaves no pixel; drop the small scales")
    out_size = sizes[0] if same else stride4_size(*sizes[0])
    inputs = [resize_as_released(image[None], size)[0] for size in sizes]
    probs: List[torch.Tensor] = []

    def passes(x: torch.Tensor) -> torch.Tensor:
        out = net(x, with_decoder=True, same=same, interpolation=interpolation)
        probs.append(net.class_scores(out["cls_logits"].float()))
        mask = torch.softmax(out["seg_logits"].float(), dim=1)
        return resize_as_released(mask, out_size, interpolation)

    pred_mask = multiscale_flip(passes, inputs, out_size, flip=hflip, reduce="mean", device=device, amp=amp)
    pred_class = torch.cat(probs).mean(0)
    return pred_class, resize_as_released(pred_mask[None], (h, w), "bilinear")[0]


def select_classes(pred_class: torch.Tensor, label: Optional[np.ndarray], conf_th: float = CONF_GT) -> np.ndarray:
    """Classes of the image as a bool ``(C,)``: ``pred_class >= conf_th``, or ``label`` when ``conf_th == -1``
    exactly (any other negative value selects every class, as released)."""
    if conf_th == CONF_GT:
        if label is None:
            raise WsegError("--conf_th -1 takes the classes from the image labels, but there are none; pass "
                            f"--conf_th (the README uses {README_CONF_TH})")
        return np.asarray(label).reshape(-1) == 1
    return (pred_class >= conf_th).cpu().numpy()


def make_seed(pred_mask: torch.Tensor, classes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(keys, seed)``: the foreground channels of ``pred_mask`` divided by their maxima (+1e-5), those of
    ``classes`` only; ``keys = [0] + class indices + 1`` (int64)."""
    fg = pred_mask[1:]
    fg = fg / (fg.flatten(1).max(dim=1)[0][:, None, None] + SEED_EPS)
    classes = np.asarray(classes, bool).reshape(-1)
    seed = fg[torch.from_numpy(classes).to(fg.device)].cpu().numpy().astype(np.float32, copy=False)
    keys = np.concatenate([[0], np.flatnonzero(classes) + 1]).astype(np.int64)
    return keys, seed


# --------------------------------------------------------------------------------------------- seed files


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only dicts, lists and numpy arrays (the released ``.pkl`` seeds), never arbitrary objects."""

    ALLOWED = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "numpy" and (name in self.ALLOWED or name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array part")


def save_seed(path: str, keys: np.ndarray, seed: np.ndarray) -> None:
    """Write a seed atomically: ``.pkl`` = the released ``{'keys', 'seed'}`` pickle; ``.npy`` = a CAM dict
    ``{key - 1: seed}`` (single-stage seeds, whose ``keys[0]`` is the background)."""
    from wseg.io import atomic_path, save_cam_dict

    keys = np.asarray(keys, np.int64)
    seed = np.asarray(seed, np.float32)
    if path.endswith(".npy"):
        save_cam_dict(path, to_cam_dict(keys, seed))
        return
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump({"keys": keys, "seed": seed}, f)


def to_cam_dict(keys: np.ndarray, seed: np.ndarray) -> Dict[int, np.ndarray]:
    """``{class index without background: seed map}`` of a single-stage seed."""
    if len(keys) != len(seed) + 1 or (len(keys) and int(keys[0]) != 0):
        raise WsegError(f"seed with keys {list(map(int, keys))} and {len(seed)} maps: only single-stage seeds "
                        "(keys[0] = 0 background, one map per class) convert to a CAM dict")
    return {int(k) - 1: seed[i] for i, k in enumerate(keys[1:])}


def load_seed(path: str, num_classes: Optional[int] = None,
              shape: Optional[Tuple[int, int]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(keys int64 (K+1,), seed float32 (K or K+1, H, W))`` from a released ``.pkl`` or a CAM-dict ``.npy``;
    checks the keys against ``num_classes`` (background included) and the maps' size against ``shape``."""
    from wseg.io import load_cam_dict, require_file

    require_file(path, "seed file", "run scripts/infer_rsepm.py for this image (or check --folder / --seed_dir)")
    if path.endswith(".npy"):
        cams = load_cam_dict(path, None if num_classes is None else num_classes - 1, shape)
        ks = sorted(cams)
        keys = np.asarray([0] + [k + 1 for k in ks], np.int64)
        h, w = shape if shape is not None else (next(iter(cams.values())).shape if cams else (0, 0))
        seed = np.stack([cams[k] for k in ks]) if ks else np.zeros((0, h, w), np.float32)
        return keys, seed.astype(np.float32, copy=False)
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(_io.BytesIO(f.read())).load()
    except Exception as exc:
        raise WsegError(f"{path}: cannot read the seed pickle ({exc.__class__.__name__}: {str(exc)[:80]}); delete it "
                        "and re-run infer_rsepm")
    if not isinstance(obj, dict) or "keys" not in obj or "seed" not in obj:
        raise WsegError(f"{path}: expected the released seed dict {{'keys', 'seed'}}; re-run infer_rsepm")
    keys = np.asarray(obj["keys"]).reshape(-1)
    seed = np.asarray(obj["seed"])
    if keys.dtype.kind not in "iu" or seed.ndim != 3 or len(seed) not in (len(keys) - 1, len(keys)):
        raise WsegError(f"{path}: seed of shape {seed.shape} does not fit its {len(keys)} keys; re-run infer_rsepm")
    if keys.size and (keys.min() < 0 or (num_classes is not None and keys.max() >= num_classes)):
        raise WsegError(f"{path}: seed keys {keys.tolist()} outside [0, {num_classes}); check --dataset/--classes")
    if not np.isfinite(seed).all():
        raise WsegError(f"{path}: the seed holds NaN or inf values; re-run infer_rsepm (check the weights)")
    return keys.astype(np.int64), seed.astype(np.float32, copy=False)


def find_seed(folder: str, image_id: str) -> str:
    """The image's seed in ``folder``: ``<id>.pkl`` (released) else ``<id>.npy``."""
    for ext in SEED_EXTS:
        p = os.path.join(folder, image_id + ext)
        if os.path.isfile(p):
            return p
    return os.path.join(folder, image_id + SEED_EXTS[0])


# --------------------------------------------------------------------------------------------- pseudo masks


def resolve_bg(tag: str, bg_th: Optional[float], bg_gamma: Optional[float | str]) -> Tuple[str, Optional[float]]:
    """The background of ``convert_seed_to_pseudo_masks.py``: ``('th', bg_th)`` when given, else ``('gamma',
    gamma)``, else ``('none', None)``. ``bg_gamma=None`` means "not given": 2.0, or none when the tag holds ``MS``
    (the released rule); ``'none'`` asks for no added background explicitly."""
    if bg_th is not None:
        return "th", float(bg_th)
    if isinstance(bg_gamma, str):
        if bg_gamma.strip().lower() != "none":
            return "gamma", float(bg_gamma)
        return "none", None
    if bg_gamma is None:
        return ("none", None) if "MS" in tag else ("gamma", BG_GAMMA)
    return "gamma", float(bg_gamma)


def with_background(seed: np.ndarray, bg: str, value: Optional[float]) -> np.ndarray:
    """Scores for the CRF / argmax: ``[bg, seed...]`` with a constant or ``(1 - max)^gamma`` background."""
    seed = np.asarray(seed, np.float32)
    if bg == "none":
        return seed
    if bg == "th":
        back = np.ones((1,) + seed.shape[1:], np.float32) * value
    else:
        back = np.power(1 - np.max(seed, axis=0, keepdims=True), value)
    return np.concatenate([back.astype(np.float32, copy=False), seed], axis=0)


def seed_to_pseudo(rgb: np.ndarray, keys: np.ndarray, seed: np.ndarray, mode: str = "crf", bg: str = "gamma",
                   bg_value: Optional[float] = BG_GAMMA, crf_params: Optional[Dict] = None,
                   released_image: bool = True) -> np.ndarray:
    """``postprocess`` of ``convert_seed_to_pseudo_masks.py``: uint8 ``(H, W)`` dataset class indices.

    ``rgb``: the image as in the file (uint8 RGB); the CRF sees :func:`released_crf_image` of it unless
    ``released_image`` is False. ``bg``/``bg_value`` from :func:`resolve_bg`."""
    from wseg.crf import crf_inference

    h, w = rgb.shape[:2]
    keys = np.asarray(keys, np.int64)
    if len(keys) <= 1:
        return np.zeros((h, w), np.uint8)
    seed = np.asarray(seed, np.float32)
    if seed.shape[-2:] != (h, w):
        seed = resize_as_released(torch.from_numpy(seed)[None], (h, w))[0].numpy()
    if mode == "crf":
        scores = with_background(seed, bg, bg_value)
        img = released_crf_image(rgb) if released_image else rgb
        params = dict(CRF_PARAMS, **(crf_params or {}))
        scores = crf_inference(img, scores, labels=len(scores), **params)
    else:
        if bg != "th":
            raise WsegError(f"--mode {mode}: without the CRF the released script takes a constant background; pass "
                            "--bg_th (or --mode crf)")
        scores = with_background(seed, "th", bg_value)
    index = np.argmax(scores, axis=0)
    if len(scores) > len(keys):
        raise WsegError(f"seed with {len(keys)} keys and {len(scores)} scores after the background: multi-stage seeds "
                        "carry their own background; pass --bg_gamma none (or a tag with MS)")
    return keys[index].astype(np.uint8)


# --------------------------------------------------------------------------------------------- dataset


def released_xml_labels(path: str, spec) -> np.ndarray:
    """Image labels as ``xml_utils.read_xml(keep_difficult=True)`` gives them: every object except those whose box,
    clipped to the image, has zero width or height (wseg's reader keeps those)."""
    vec = np.zeros(spec.num_fg, np.float32)
    if not os.path.isfile(path):
        return vec                     # released: no xml -> no tags (the test split)
    try:
        root = ET.parse(path).getroot()
        size = root.find("size")
        width, height = int(size.findtext("width")), int(size.findtext("height"))
        index = {n: i for i, n in enumerate(spec.fg_names)}
        for obj in root.findall("object"):
            name = obj.findtext("name")
            box = obj.find("bndbox")

            def coord(tag: str, limit: int) -> int:
                return max(min(int(box.findtext(tag).split(".")[0]), limit - 1), 0)

            if coord("xmax", width) - coord("xmin", width) == 0 or coord("ymax", height) - coord("ymin", height) == 0:
                continue
            if name not in index:
                raise WsegError(f"{path}: object class {name!r} is not in the {spec.name} class list; pass the right "
                                "--dataset/--classes")
            vec[index[name]] = 1.0
    except WsegError:
        raise
    except Exception as exc:
        raise WsegError(f"{path}: cannot read the annotation ({exc.__class__.__name__}); fix or remove the file")
    return vec


def image_labels(voc, ids: Sequence[str], released_xml: bool = False) -> Dict[str, np.ndarray]:
    """Image-level labels: wseg's (``cls_labels.npy``, else every XML object, else the mask) or, with
    ``released_xml``, the released reader's (:func:`released_xml_labels`; no XML -> no labels)."""
    from wseg.data.voc import load_cls_labels

    if released_xml:
        return {i: released_xml_labels(voc.annotation_path(i), voc.spec) for i in ids}
    return load_cls_labels(voc, ids)


def domain_ids(voc, domain: str) -> List[str]:
    """Ids of a released ``--domain`` (``train``, ``train_aug``, ``validation``, ``test``) or a list file, in either
    dataset layout (``validation`` finds VOC's ``val.txt``)."""
    from wseg.data.voc import read_list

    listed = voc.list_path(domain)
    return read_list(listed) if listed else voc.ids(domain)


def domain_folder(domain: str) -> str:
    """The released output sub-folder of a domain: ``train_aug`` seeds are written to ``train/``."""
    name = os.path.splitext(os.path.basename(domain.rstrip("/")))[0]
    return "train" if name == "train_aug" else name


__all__ = ["SCALES", "CONF_GT", "README_CONF_TH", "CRF_PARAMS", "BG_GAMMA", "EVAL_START", "EVAL_END", "EVAL_STEP",
           "TAG", "normalize_image", "released_crf_image", "infer_image", "select_classes", "make_seed", "save_seed",
           "load_seed", "to_cam_dict", "find_seed", "resolve_bg", "with_background", "seed_to_pseudo",
           "released_xml_labels", "image_labels", "domain_ids", "domain_folder"]
