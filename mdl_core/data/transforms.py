"""Benchmark preprocessing with torchvision transforms v2 and torchvision image decoding.

Images are decoded once, converted to RGB (grayscale / RGBA / palette handled by torchvision), and
resized so the shorter side is `image_size` (the decathlon's 72 px; the CPU demo uses 32). What stays
in memory is uint8; per batch we apply
  training   : random `crop` crop + horizontal flip       (domains with flip=True)
               centre `crop` crop, no flip, no jitter      (digits, characters, signs: flip=False)
  evaluation : centre `crop` crop
and then float conversion + per-domain mean/std normalisation.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from mdl.core.data.errors import DataError

# Decathlon domains whose meaning changes under a mirror (and which get no crop jitter either).
NO_FLIP_DOMAINS = frozenset({"gtsrb", "omniglot", "svhn"})


# torchvision's ImageNet statistics: what an imported domain is normalised with when nothing else is known
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def parse_stats(text: str, what: str) -> list[float]:
    """'R,G,B' -> three finite floats (std: each > 0); ValueError in one line otherwise."""
    import math

    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals) or (what == "std" and min(vals) <= 0):
        raise ValueError(f"--{what} {text!r}: give three comma-separated numbers (R,G,B)"
                         + (", each > 0" if what == "std" else ""))
    return vals


def default_crop(image_size: int) -> int:
    """72 -> 64 as in the benchmark; 32 -> 28."""
    return int(round(image_size * 64 / 72))


CMYK = -4  # decode_rgb's channel code for a CMYK JPEG (4 channels, none of them alpha)


def decode_rgb(path: str | Path) -> tuple[torch.Tensor, int]:
    """Decode an image file to a uint8 RGB tensor [3,H,W]; also return the channel count it had
    (1 grayscale, 2 grayscale+alpha, 3 RGB, 4 RGBA, CMYK for a CMYK JPEG). Raises DataError naming the
    path on failure."""
    path = Path(path)
    return _decode(_read_bytes(path), path, lambda: path)


def decode_rgb_bytes(data: bytes, label: str = "upload") -> tuple[torch.Tensor, int]:
    """:func:`decode_rgb` for an image held in memory (an HTTP upload); errors name ``label``."""
    import io

    if not data:
        raise DataError(f"cannot decode image {label}: empty")
    return _decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), label, lambda: io.BytesIO(data))


def as_rgb(image, label: str = "image") -> torch.Tensor:
    """Any image a Python caller holds, as the uint8 RGB tensor [3,H,W] a decoder gives: a file path, a PIL
    image (any mode), bytes of an encoded file, or a tensor / array of pixels ([3,H,W] or [H,W]; uint8, or
    float in [0, 1])."""
    import numpy as np

    if isinstance(image, (str, Path)):
        return decode_rgb(image)[0]
    if isinstance(image, (bytes, bytearray)):
        return decode_rgb_bytes(bytes(image), label)[0]
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image
        image = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.array(image))  # a copy: PIL's buffer is read-only
    if not isinstance(image, torch.Tensor):
        raise DataError(f"cannot read {label}: a path, PIL image, bytes or tensor, not {type(image).__name__}")
    if image.ndim == 2:
        image = image.unsqueeze(0)
    if image.ndim != 3 or image.shape[0] not in (1, 3) or min(image.shape[1:]) < 1:
        raise DataError(f"cannot read {label}: a tensor of shape [3,H,W] or [H,W], not {list(image.shape)}")
    if image.is_floating_point():
        if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise DataError(f"cannot read {label}: float pixels must be finite and in [0, 1]")
        image = (image * 255).round().to(torch.uint8)
    elif image.dtype != torch.uint8:
        raise DataError(f"cannot read {label}: pixels must be uint8 or float in [0, 1], not {image.dtype}")
    return image.expand(3, -1, -1).contiguous().cpu()


def _decode(data: torch.Tensor, label, pillow_source) -> tuple[torch.Tensor, int]:
    try:
        img = decode_image(data, mode=ImageReadMode.UNCHANGED)
        channels = int(img.shape[0])
        if channels == 4 and bytes(data[:2].tolist()) == b"\xff\xd8":  # JPEG has no alpha: 4 channels are CMYK
            channels = CMYK
        if channels != 3:  # let torchvision do the grayscale/alpha -> RGB conversion
            img = decode_image(data, mode=ImageReadMode.RGB)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything the decoders throw means "not an image we can read"
        img, channels = _decode_with_pillow(pillow_source(), exc, label)
    if img.ndim != 3 or img.shape[0] != 3 or img.shape[1] < 1 or img.shape[2] < 1:
        raise DataError(f"cannot decode image {label}: unexpected shape {tuple(img.shape)}")
    if img.dtype == torch.uint16:  # 16-bit PNGs: scale to 8 bits (65535 -> 255), as prediction's decoder does
        img = (img.to(torch.int32) // 257).to(torch.uint8)
    elif img.dtype != torch.uint8:
        raise DataError(f"cannot decode image {label}: unsupported pixel type {img.dtype}")
    return img, channels


def _read_bytes(path: Path) -> torch.Tensor:
    from torchvision.io import read_file

    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    return read_file(str(path))


def _decode_with_pillow(source, first_exc: BaseException, label) -> tuple[torch.Tensor, int]:
    """Formats torchvision's decoders don't cover (BMP, TIFF): Pillow, then torchvision's to-tensor."""
    try:
        from PIL import Image

        with Image.open(source) as im:
            bands = CMYK if im.mode == "CMYK" else len(im.getbands())
            img = F.pil_to_tensor(im.convert("RGB"))
        return img, bands
    except Exception:  # noqa: BLE001
        raise DataError(f"cannot decode image {label}: {_reason(first_exc)}") from None


def _reason(exc: BaseException) -> str:
    """The decoder's message without torchvision's C++ function name and source location."""
    msg = (str(exc).splitlines() or [""])[0]
    msg = re.sub(r"^\w+, \S+\.(?:cpp|h|hpp):\d+, ", "", msg)  # "decode_image, /__w/.../decode_image.cpp:67, "
    msg = re.sub(r"\s*Exception raised from .*$", "", msg)
    return msg.strip() or type(exc).__name__


def resize_shorter(img: torch.Tensor, image_size: int) -> torch.Tensor:
    """Resize uint8 [...,3,H,W] so that min(H,W) == image_size (antialiased)."""
    h, w = img.shape[-2:]
    if min(h, w) == image_size:
        return img
    if h <= w:
        size = [image_size, max(image_size, int(round(w * image_size / h)))]
    else:
        size = [max(image_size, int(round(h * image_size / w))), image_size]
    return F.resize(img, size, antialias=True)


def eval_transform(crop: int, mean, std) -> v2.Compose:
    return v2.Compose([v2.CenterCrop(crop), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def train_transform(crop: int, mean, std, flip: bool) -> v2.Compose:
    if not flip:  # meaning flips under a mirror: no flip and no crop jitter
        return eval_transform(crop, mean, std)
    return v2.Compose(
        [
            v2.RandomCrop(crop),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


class BatchAugment:
    """The same policy as `train_transform`/`eval_transform`, applied to a list of uint8 images at once
    with the v2 functional kernels: crop/flip per image (parameters drawn from `generator`), then one
    dtype conversion + normalisation for the whole batch. This is what the DataLoader uses (fast path);
    the per-item v2.Compose is used for single-item access."""

    def __init__(self, crop: int, mean, std, *, train: bool, flip: bool):
        self.crop = crop
        self.mean = list(mean)
        self.std = list(std)
        self.random = bool(train and flip)

    def __call__(self, images: list[torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.crop
        out = []
        if self.random:
            n = len(images)
            u = torch.rand(n, 3, generator=generator)
            for i, img in enumerate(images):
                h, w = img.shape[-2:]
                top = int(u[i, 0] * (h - c + 1))
                left = int(u[i, 1] * (w - c + 1))
                x = F.crop(img, top, left, c, c)
                if u[i, 2] < 0.5:
                    x = F.horizontal_flip(x)
                out.append(x)
        else:
            for img in images:
                out.append(F.center_crop(img, [c, c]))
        batch = torch.stack(out)
        batch = F.to_dtype(batch, torch.float32, scale=True)
        return F.normalize(batch, self.mean, self.std)


def channel_stats(images) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean/std in [0,1] units over every pixel of an iterable of uint8 [3,H,W] tensors
    (or one stacked [N,3,H,W] tensor), accumulated in float64."""
    s = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    n = 0
    if isinstance(images, torch.Tensor):
        chunks = (images[i : i + 512] for i in range(0, images.shape[0], 512))
    else:
        chunks = (img.unsqueeze(0) for img in images)
    for x in chunks:
        x = x.to(torch.float64) / 255.0
        s += x.sum(dim=(0, 2, 3))
        s2 += (x * x).sum(dim=(0, 2, 3))
        n += x.shape[0] * x.shape[2] * x.shape[3]
    if n == 0:
        raise DataError("cannot compute mean/std: the training split has no images")
    mean = s / n
    var = (s2 / n - mean * mean).clamp_min(0)
    std = var.sqrt().clamp_min(1e-3)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)
