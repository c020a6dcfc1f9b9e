"""Small deterministic drawing helpers for the builtin domains (numpy + Pillow, fonts from matplotlib)."""
from __future__ import annotations

import functools
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

S = 40  # native size of every builtin image


def font_path(name: str) -> str:
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name)


FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Oblique.ttf",
         "DejaVuSerif-Bold.ttf", "DejaVuSansMono-Bold.ttf"]


@functools.lru_cache(maxsize=None)
def font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path(name), size)


@functools.lru_cache(maxsize=None)
def font_cmap(name: str) -> frozenset:
    from fontTools.ttLib import TTFont

    return frozenset(TTFont(font_path(name)).getBestCmap())


def fonts_for(text: str) -> list[str]:
    return [f for f in FONTS if all(ord(ch) in font_cmap(f) for ch in text)]


def rand_colour(rng, lo=0, hi=256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def contrasting(rng, base, min_delta=60) -> tuple[int, int, int]:
    for _ in range(20):
        c = rand_colour(rng)
        if abs(sum(c) - sum(base)) / 3 >= min_delta or max(abs(a - b) for a, b in zip(c, base)) >= 1.6 * min_delta:
            return c
    return tuple(255 - v for v in base)


def region_mean(img: Image.Image, mask: Image.Image | None = None) -> tuple[int, int, int]:
    """Mean colour of `img` where `mask` is on (all of it without a mask): what a foreground must contrast with."""
    a = np.asarray(img, dtype=np.float32).reshape(-1, 3)
    if mask is not None:
        m = np.asarray(mask.resize(img.size), dtype=np.float32).reshape(-1) > 127
        if m.any():
            a = a[m]
    return tuple(int(v) for v in a.mean(0))


def smooth_field(rng, grid=4, size=S, channels=3) -> np.ndarray:
    """Low-frequency random field in [0,1], [size,size,channels]."""
    g = rng.random((grid, grid, channels)).astype(np.float32)
    img = Image.fromarray((g * 255).astype(np.uint8).squeeze() if channels == 1 else (g * 255).astype(np.uint8))
    img = img.resize((size, size), Image.BILINEAR)
    a = np.asarray(img, dtype=np.float32) / 255.0
    return a.reshape(size, size, channels)


def clutter(rng, size=S, n_strokes=(1, 5), gray=False, strength=1.0) -> Image.Image:
    """Cluttered background: a smooth colour field plus random lines and ellipses. The strokes are
    blended towards the background (at most ~half contrast) so they distract without erasing the
    foreground: the domains must stay learnable from a few thousand images."""
    base = smooth_field(rng, grid=int(rng.integers(2, 6)), size=size)
    lo = rng.random(3) * 0.6
    span = 0.2 + rng.random(3) * 0.6 * strength
    arr = np.clip(lo + base * span, 0, 1)
    img = Image.fromarray((arr * 255).astype(np.uint8), "RGB")
    mean = (arr.reshape(-1, 3).mean(0) * 255)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(*n_strokes))):
        mix = rng.uniform(0.25, 0.55) * strength
        c = tuple(int(m + mix * (v - m)) for m, v in zip(mean, rand_colour(rng)))
        x0, y0, x1, y1 = (int(v) for v in rng.integers(-5, size + 5, 4))
        if rng.random() < 0.6:
            d.line([x0, y0, x1, y1], fill=c, width=int(rng.integers(1, 4)))
        else:
            x0, x1 = sorted((x0, x1))
            y0, y1 = sorted((y0, y1))
            d.ellipse([x0, y0, x1 + 2, y1 + 2], outline=c, width=int(rng.integers(1, 3)))
    if gray:
        img = img.convert("L").convert("RGB")
    return img


def glyph_mask(text: str, font_name: str, size: int, canvas: int = 64) -> Image.Image:
    """Text rendered white on black, centred on a canvas x canvas 'L' image."""
    f = font(font_name, size)
    img = Image.new("L", (canvas, canvas), 0)
    d = ImageDraw.Draw(img)
    d.text((canvas / 2, canvas / 2), text, fill=255, font=f, anchor="mm")
    return img


def affine(img: Image.Image, rng, *, rot=15.0, shear=0.15, scale=(0.8, 1.1), shift=0.08, out=S,
           resample=Image.BILINEAR) -> Image.Image:
    """Random rotation/shear/scale/shift of a square image, output out x out."""
    w = img.size[0]
    a = np.deg2rad(rng.uniform(-rot, rot))
    sh = rng.uniform(-shear, shear)
    sc = rng.uniform(*scale) * out / w
    tx, ty = rng.uniform(-shift, shift, 2) * out
    # forward map: p_out = c_out + M (p_in - c_in) + t; PIL wants the inverse
    m = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.array([[1, sh], [0, 1]]) * sc
    inv = np.linalg.inv(m)
    c_in, c_out = np.array([w / 2, w / 2]), np.array([out / 2 + tx, out / 2 + ty])
    off = c_in - inv @ c_out
    coeffs = (inv[0, 0], inv[0, 1], off[0], inv[1, 0], inv[1, 1], off[1])
    return img.transform((out, out), Image.AFFINE, coeffs, resample=resample)


def compose(bg: Image.Image, mask: Image.Image, colour) -> Image.Image:
    fg = Image.new("RGB", bg.size, colour)
    return Image.composite(fg, bg, mask)


def finish(img: Image.Image, rng, *, noise=(0.0, 10.0), blur=(0.0, 0.8), gain=(0.75, 1.25)) -> np.ndarray:
    """Blur, global gain/offset, Gaussian noise -> uint8 [S,S,3]."""
    r = rng.uniform(*blur)
    if r > 0.25:
        img = img.filter(ImageFilter.GaussianBlur(r))
    a = np.asarray(img, dtype=np.float32)
    a = a * rng.uniform(*gain) + rng.uniform(-20, 20)
    sigma = rng.uniform(*noise)
    if sigma > 0:
        a = a + rng.normal(0, sigma, a.shape).astype(np.float32)
    return np.clip(a + 0.5, 0, 255).astype(np.uint8)


def pattern(family: str, freq: float, rng, size=S) -> np.ndarray:
    """A texture in [0,1], [size,size]: `freq` is roughly cycles per image."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    a = rng.uniform(0, np.pi)
    u = x * np.cos(a) + y * np.sin(a)
    v = -x * np.sin(a) + y * np.cos(a)
    ph = rng.uniform(0, 2 * np.pi)
    f = 2 * np.pi * freq
    if family == "stripes":
        p = np.sin(f * u + ph) > 0
    elif family == "checker":
        p = (np.sin(f * u + ph) > 0) ^ (np.sin(f * v) > 0)
    elif family == "dots":
        p = (np.sin(f * u + ph) * np.sin(f * v)) > 0.5
    elif family == "rings":
        cx, cy = rng.uniform(-0.3, 0.3, 2)
        p = np.sin(f * np.hypot(x - cx, y - cy) + ph) > 0
    elif family == "rays":
        p = np.sin(np.round(freq) * 2 * np.arctan2(y, x) + ph) > 0
    elif family == "grid":
        p = (np.abs(np.sin(f * u / 2 + ph)) > 0.92) | (np.abs(np.sin(f * v / 2)) > 0.92)
    elif family == "crosshatch":
        p = (np.sin(f * (u + v) + ph) > 0.6) | (np.sin(f * (u - v)) > 0.6)
    elif family == "waves":
        p = np.sin(f * u + 2.5 * np.sin(f * 0.5 * v) + ph) > 0
    elif family == "zigzag":
        p = np.sin(f * u + 4 * np.abs(((freq * v) % 1.0) - 0.5) * np.pi + ph) > 0
    elif family == "hex":
        p = (np.cos(f * u) + np.cos(f * (0.5 * u + 0.866 * v)) + np.cos(f * (-0.5 * u + 0.866 * v) + ph)) > 0.5
    elif family == "bricks":
        row = np.floor(freq * v + ph)
        p = (np.abs(np.sin(np.pi * freq * v + ph)) < 0.25) | (np.abs(np.sin(np.pi * (freq * u + 0.5 * row))) < 0.2)
    elif family == "blobs":
        p = smooth_field(rng, grid=max(2, int(freq)), size=size, channels=1)[..., 0] > 0.5
    elif family == "noise":
        p = smooth_field(rng, grid=max(2, int(freq * 2.5)), size=size, channels=1)[..., 0]
    elif family == "spots":
        p = np.zeros((size, size), bool)
        n = int(freq * freq * 1.5)
        cx, cy = rng.uniform(-0.5, 0.5, (2, n))
        rad = 0.35 / max(freq, 1)
        for i in range(n):
            p |= (x - cx[i]) ** 2 + (y - cy[i]) ** 2 < rad * rad
    elif family == "spiral":
        r, t = np.hypot(x, y), np.arctan2(y, x)
        p = np.sin(f * r + 2 * t + ph) > 0
    elif family == "plaid":
        p = 0.5 * (np.sin(f * u + ph) > 0.3) + 0.5 * (np.sin(0.5 * f * v) > 0.3)
    else:
        raise ValueError(family)
    return p.astype(np.float32)


TEXTURE_FAMILIES = ["stripes", "checker", "dots", "rings", "rays", "grid", "crosshatch", "waves", "zigzag", "hex",
                    "bricks", "blobs", "noise", "spots", "spiral", "plaid"]


def colourise(p: np.ndarray, c1, c2) -> Image.Image:
    c1, c2 = np.asarray(c1, np.float32), np.asarray(c2, np.float32)
    a = c1 * (1 - p[..., None]) + c2 * p[..., None]
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def unit_shape(kind: str) -> list[tuple[float, float]]:
    """Vertices in [-1,1]^2 of a named shape."""
    def ngon(n, r=1.0, rot=0.0):
        return [(r * np.cos(rot + 2 * np.pi * k / n), r * np.sin(rot + 2 * np.pi * k / n)) for k in range(n)]

    def star(n, inner):
        pts = []
        for k in range(2 * n):
            r = 1.0 if k % 2 == 0 else inner
            t = np.pi * k / n
            pts.append((r * np.cos(t), r * np.sin(t)))
        return pts

    table = {
        "triangle": lambda: ngon(3), "square": lambda: ngon(4, rot=np.pi / 4), "pentagon": lambda: ngon(5),
        "hexagon": lambda: ngon(6), "heptagon": lambda: ngon(7), "octagon": lambda: ngon(8),
        "circle": lambda: ngon(32), "ellipse": lambda: [(x, 0.5 * y) for x, y in ngon(32)],
        "star5": lambda: star(5, 0.45), "star6": lambda: star(6, 0.55), "star8": lambda: star(8, 0.6),
        "plus": lambda: [(-.3, -1), (.3, -1), (.3, -.3), (1, -.3), (1, .3), (.3, .3), (.3, 1), (-.3, 1), (-.3, .3),
                         (-1, .3), (-1, -.3), (-.3, -.3)],
        "ell": lambda: [(-.8, -1), (-.2, -1), (-.2, .4), (.8, .4), (.8, 1), (-.8, 1)],
        "tee": lambda: [(-1, -1), (1, -1), (1, -.4), (.3, -.4), (.3, 1), (-.3, 1), (-.3, -.4), (-1, -.4)],
        "arrow": lambda: [(-1, -.3), (.2, -.3), (.2, -.8), (1, 0), (.2, .8), (.2, .3), (-1, .3)],
        "crescent": lambda: [(np.cos(t), np.sin(t)) for t in np.linspace(-2.2, 2.2, 16)]
        + [(0.55 + 0.8 * np.cos(t) - 0.4, 0.8 * np.sin(t)) for t in np.linspace(2.0, -2.0, 16)],
        "halfdisc": lambda: [(np.cos(t), np.sin(t) - 0.4) for t in np.linspace(0, np.pi, 16)],
        "rhombus": lambda: [(0, -1), (.45, 0), (0, 1), (-.45, 0)],
        "trapezoid": lambda: [(-1, .6), (1, .6), (.45, -.6), (-.45, -.6)],
        "parallelogram": lambda: [(-1, .5), (.4, .5), (1, -.5), (-.4, -.5)],
        "heart": lambda: [(16 * np.sin(t) ** 3 / 17, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t)
                                                        - np.cos(4 * t)) / 17) for t in np.linspace(0, 2 * np.pi, 30)],
        "drop": lambda: [((1 - np.sin(t)) * np.cos(t) * 0.8, np.sin(t)) for t in np.linspace(0, 2 * np.pi, 30)],
        "ushape": lambda: [(-1, -1), (-.4, -1), (-.4, .4), (.4, .4), (.4, -1), (1, -1), (1, 1), (-1, 1)],
        "bolt": lambda: [(-.2, -1), (.6, -1), (.1, -.1), (.6, -.1), (-.4, 1), (-.05, .15), (-.5, .15)],
    }
    return table[kind]()


SHAPES = ["triangle", "square", "pentagon", "hexagon", "heptagon", "octagon", "circle", "ellipse", "star5", "star6",
          "star8", "plus", "ell", "tee", "arrow", "crescent", "halfdisc", "rhombus", "trapezoid", "parallelogram",
          "heart", "drop", "ushape", "bolt"]


def draw_shape(d: ImageDraw.ImageDraw, kind: str, cx, cy, radius, angle, fill, outline_width=0):
    pts = np.asarray(unit_shape(kind), np.float32)
    c, s = np.cos(angle), np.sin(angle)
    pts = pts @ np.array([[c, s], [-s, c]], np.float32) * radius + np.array([cx, cy], np.float32)
    poly = [tuple(p) for p in pts.tolist()]
    if outline_width:
        d.line(poly + [poly[0]], fill=fill, width=outline_width, joint="curve")
    else:
        d.polygon(poly, fill=fill)
