"""Generators of the bundled mini-decathlon. Each takes a numpy Generator and a scale (1.0 = full size;
tests use a small one) and returns uint8 images [N,S,S,3], labels, split codes (0 train, 1 val, 2 test)
and class names. Everything is drawn from the generator, so the same seed gives the same bytes."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mdl.core.data.builtin.render import (region_mean, 
    S, SHAPES, TEXTURE_FAMILIES, affine, clutter, colourise, compose, contrasting, draw_shape, finish, fonts_for,
    glyph_mask, pattern, rand_colour, smooth_field,
)


def _counts(per_class: tuple[int, int, int], scale: float) -> tuple[int, int, int]:
    return tuple(max(1, int(round(n * scale))) for n in per_class)


def _assemble(per_class_images: list[list[np.ndarray]], counts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    imgs, labels, split = [], [], []
    for label, lst in enumerate(per_class_images):
        c = counts(label) if callable(counts) else counts
        codes = [0] * c[0] + [1] * c[1] + [2] * c[2]
        for img, code in zip(lst, codes):
            imgs.append(img)
            labels.append(label)
            split.append(code)
    return np.stack(imgs), np.asarray(labels, np.int64), np.asarray(split, np.int8)


def _gen_classes(n_classes, counts, draw):
    per = [[draw(c) for _ in range(sum(counts))] for c in range(n_classes)]
    return _assemble(per, counts)


# --------------------------------------------------------------------------------------------- source
SOURCE_GLYPHS = list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def gen_source(rng, scale=1.0):
    """100 classes: 36 glyphs, 24 shapes x {filled, outline}, 16 texture families; cluttered backgrounds,
    random colours, pose and scale (so colour and position say nothing about the class)."""
    classes = [f"glyph-{g}" for g in SOURCE_GLYPHS] + [f"{s}-filled" for s in SHAPES] + \
              [f"{s}-outline" for s in SHAPES] + [f"texture-{t}" for t in TEXTURE_FAMILIES]
    counts = _counts((160, 20, 20), scale)
    glyph_fonts = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
                   "DejaVuSans-Oblique.ttf"]

    def draw(c):
        # Moderate clutter: the source must be learnable in a few CPU epochs to give the trunk useful filters.
        bg = clutter(rng, n_strokes=(0, 4), strength=0.7)
        if c < 36:
            m = glyph_mask(SOURCE_GLYPHS[c], glyph_fonts[rng.integers(len(glyph_fonts))], 44)
            m = affine(m, rng, rot=15, shear=0.15, scale=(0.7, 1.0), shift=0.1)
            img = compose(bg, m, contrasting(rng, region_mean(bg, m), 80))
        elif c < 36 + 2 * len(SHAPES):
            k = (c - 36) % len(SHAPES)
            outline = c >= 36 + len(SHAPES)
            d = ImageDraw.Draw(bg)
            r = rng.uniform(9, 17)
            cx, cy = rng.uniform(20 - 6, 20 + 6, 2)
            draw_shape(d, SHAPES[k], cx, cy, r, rng.uniform(0, 2 * np.pi), contrasting(rng, region_mean(bg), 80),
                       outline_width=int(rng.integers(2, 4)) if outline else 0)
            img = bg
        else:
            fam = TEXTURE_FAMILIES[c - 36 - 2 * len(SHAPES)]
            p = pattern(fam, rng.uniform(2.5, 6.5), rng)
            tex = colourise(p, rand_colour(rng), rand_colour(rng))
            mask = Image.fromarray((smooth_field(rng, 3, channels=1)[..., 0] > 0.3).astype(np.uint8) * 255, "L")
            img = Image.composite(tex, bg, mask)
        return finish(img, rng, noise=(0, 8), blur=(0, 0.7))

    imgs, labels, split = _gen_classes(len(classes), counts, draw)
    return imgs, labels, split, classes


# --------------------------------------------------------------------------------------------- digits
def gen_digits(rng, scale=1.0):
    """scikit-learn's real handwritten digits (1797 8x8 scans), upsampled with random pose, ink and paper
    colours, noise and a few strokes of clutter. Stratified 60/20/20 split."""
    from sklearn.datasets import load_digits

    ds = load_digits()
    x, y = ds.images, ds.target
    order = rng.permutation(len(y))
    if scale < 1.0:
        keep = []
        for c in range(10):
            idx = order[y[order] == c]
            keep += idx[: max(3, int(round(len(idx) * scale)))].tolist()
        order = np.asarray(keep)
    out, labels, split = [], [], []
    seen = np.zeros(10, int)
    totals = np.bincount(y[order], minlength=10)
    for i in order:
        c = int(y[i])
        m = Image.fromarray((x[i] / 16 * 255).astype(np.uint8), "L").resize((32, 32), Image.BILINEAR)
        m = affine(m, rng, rot=12, shear=0.2, scale=(0.55, 0.9), shift=0.1)
        paper = rand_colour(rng, 100, 256)
        bg = Image.new("RGB", (S, S), paper)
        if rng.random() < 0.5:
            bg = clutter(rng, n_strokes=(1, 4), strength=0.5)
        img = compose(bg, m, contrasting(rng, region_mean(bg, m), 80))
        out.append(finish(img, rng, noise=(3, 18), blur=(0, 1.0)))
        n_hold = max(1, int(round(0.2 * totals[c])))  # val and test: 20% each, at least one
        k = seen[c]
        split.append(0 if k < totals[c] - 2 * n_hold else (1 if k < totals[c] - n_hold else 2))
        seen[c] += 1
        labels.append(c)
    return np.stack(out), np.asarray(labels, np.int64), np.asarray(split, np.int8), [str(d) for d in range(10)]


# --------------------------------------------------------------------------------------------- glyphs
def _script(a, b, n, skip=()):
    chars = [chr(c) for c in range(a, b) if chr(c) not in skip]
    return chars[:n]


GLYPH_SCRIPTS = {
    "greek": _script(0x3B1, 0x3CA, 20, skip="ς"),
    "armenian": _script(0x531, 0x557, 20),
    "georgian": _script(0x10D0, 0x10F1, 20),
    "hebrew": _script(0x5D0, 0x5EB, 20, skip="ךםןףץ"),
    "tifinagh": _script(0x2D30, 0x2D68, 22)[2:],
    "nko": _script(0x7CA, 0x7EB, 20),
    "ogham": _script(0x1681, 0x169B, 6),
}


def gen_glyphs(rng, scale=1.0):
    """~126 characters of seven scripts (Greek, Armenian, Georgian, Hebrew, Tifinagh, N'Ko, Ogham) from the
    DejaVu fonts matplotlib ships: dark strokes on paper (Omniglot-like), random font, rotation, shear,
    stroke weight, blur and noise; few images per class."""
    chars = [(s, ch) for s, lst in GLYPH_SCRIPTS.items() for ch in lst]
    classes = [f"{s}-U+{ord(ch):04X}" for s, ch in chars]
    counts = _counts((24, 12, 12), scale)
    fonts = [fonts_for(ch) for _, ch in chars]

    def draw(c):
        fl = fonts[c]
        m = glyph_mask(chars[c][1], fl[rng.integers(len(fl))], 40)
        if rng.random() < 0.3:
            m = m.filter(ImageFilter.MaxFilter(3))
        m = affine(m, rng, rot=18, shear=0.25, scale=(0.6, 0.95), shift=0.1)
        paper = tuple(int(v) for v in rng.integers(200, 256) - rng.integers(0, 25, 3))
        ink = tuple(int(v) for v in rng.integers(0, 90, 3))
        img = compose(Image.new("RGB", (S, S), paper), m, ink)
        return finish(img, rng, noise=(2, 14), blur=(0, 1.0), gain=(0.85, 1.1))

    imgs, labels, split = _gen_classes(len(classes), counts, draw)
    return imgs, labels, split, classes


# --------------------------------------------------------------------------------------------- textures
TARGET_TEXTURES = ["stripes", "checker", "dots", "rings", "waves", "zigzag", "hex", "bricks", "blobs", "crosshatch"]
BANDS = [(1.8, 3.2), (3.0, 4.8), (4.6, 7.0)]


def gen_textures(rng, scale=1.0):
    """30 classes = 10 texture families x 3 overlapping frequency bands (coarse/medium/fine): random colours,
    orientation, phase, contrast, blur and noise. Neighbouring bands overlap, so it cannot be perfect."""
    classes = [f"{f}-{b}" for f in TARGET_TEXTURES for b in ("coarse", "medium", "fine")]
    counts = _counts((40, 25, 25), scale)

    def draw(c):
        fam, band = TARGET_TEXTURES[c // 3], BANDS[c % 3]
        p = pattern(fam, rng.uniform(*band), rng)
        c1 = rand_colour(rng)
        c2 = tuple(int(np.clip(v + rng.integers(-140, 140), 0, 255)) for v in c1)
        return finish(colourise(p, c1, c2), rng, noise=(2, 25), blur=(0, 1.2), gain=(0.6, 1.3))

    imgs, labels, split = _gen_classes(len(classes), counts, draw)
    return imgs, labels, split, classes


# --------------------------------------------------------------------------------------------- signs
def _sign_classes():
    cls = []
    for t in ["20", "30", "50", "60", "70", "80", "100", "120", "→", "←", "↑", "P"]:
        cls.append(("circle-red", t))
    for t in ["→", "←", "↑", "↓", "↗", "↖", "↘", "↙"]:
        cls.append(("circle-blue", t))
    for t in ["!", "↰", "↱", "≈", "X", "Y", "T", "Δ"]:
        cls.append(("triangle", t))
    cls += [("inv-triangle", ""), ("octagon", "STOP"), ("diamond", ""), ("diamond", "/"), ("no-entry", ""),
            ("end", ""), ("end", "80")]
    for t in ["P", "H", "i", "↑", "→", "A", "E", "⇅"]:
        cls.append(("square-blue", t))
    return cls


SIGN_CLASSES = _sign_classes()


def _sign_template(kind: str, text: str) -> Image.Image:
    W = 64
    img = Image.new("RGBA", (W, W), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    red, blue, white, yellow, black = (200, 20, 30, 255), (20, 60, 170, 255), (245, 245, 245, 255), \
        (240, 200, 20, 255), (15, 15, 15, 255)
    ink = black
    if kind == "circle-red":
        d.ellipse([2, 2, W - 3, W - 3], fill=white, outline=red, width=8)
    elif kind == "circle-blue":
        d.ellipse([2, 2, W - 3, W - 3], fill=blue)
        ink = white
    elif kind == "triangle":
        d.polygon([(W / 2, 3), (W - 3, W - 8), (3, W - 8)], fill=red)
        d.polygon([(W / 2, 16), (W - 15, W - 14), (15, W - 14)], fill=white)
    elif kind == "inv-triangle":
        d.polygon([(W / 2, W - 3), (W - 3, 8), (3, 8)], fill=red)
        d.polygon([(W / 2, W - 16), (W - 15, 14), (15, 14)], fill=white)
    elif kind == "octagon":
        pts = [(W / 2 + 30 * np.cos(np.pi / 8 + k * np.pi / 4), W / 2 + 30 * np.sin(np.pi / 8 + k * np.pi / 4))
               for k in range(8)]
        d.polygon(pts, fill=red)
        ink = white
    elif kind == "diamond":
        d.polygon([(W / 2, 2), (W - 2, W / 2), (W / 2, W - 2), (2, W / 2)], fill=white)
        d.polygon([(W / 2, 8), (W - 8, W / 2), (W / 2, W - 8), (8, W / 2)], fill=yellow)
    elif kind == "no-entry":
        d.ellipse([2, 2, W - 3, W - 3], fill=red)
        d.rectangle([12, W / 2 - 5, W - 12, W / 2 + 5], fill=white)
    elif kind == "end":
        d.ellipse([2, 2, W - 3, W - 3], fill=white, outline=black, width=3)
        ink = (110, 110, 110, 255)
    elif kind == "square-blue":
        d.rectangle([4, 4, W - 5, W - 5], fill=blue, outline=white, width=3)
        ink = white
    if text:
        from mdl.core.data.builtin.render import font

        size = 30 if len(text) <= 1 else (24 if len(text) == 2 else (17 if len(text) == 3 else 14))
        fname = "DejaVuSans-Bold.ttf" if fonts_for(text) and "DejaVuSans-Bold.ttf" in fonts_for(text) else "DejaVuSans.ttf"
        d.text((W / 2, W / 2 + (6 if kind == "triangle" else 0)), text, fill=ink, font=font(fname, size), anchor="mm")
    if kind == "end" or (kind == "diamond" and text == "/"):
        d.line([(14, W - 14), (W - 14, 14)], fill=black, width=4)
    return img


def gen_signs(rng, scale=1.0):
    """43 traffic-sign classes (shape x colour x symbol, GTSRB-like): the sign at random scale, small
    rotation and shear, lighting, blur and noise, on cluttered street-like backgrounds. Arrows pointing
    left and right are different classes, so no flip."""
    classes = [f"{k}:{t}" if t else k for k, t in SIGN_CLASSES]
    templates = [_sign_template(k, t) for k, t in SIGN_CLASSES]
    counts = _counts((100, 30, 30), scale)

    def draw(c):
        bg = clutter(rng, n_strokes=(2, 7))
        t = affine(templates[c], rng, rot=10, shear=0.12, scale=(0.45, 0.95), shift=0.12)
        bg.paste(t, (0, 0), t)
        return finish(bg, rng, noise=(2, 16), blur=(0, 1.4), gain=(0.4, 1.3))

    imgs, labels, split = _gen_classes(len(classes), counts, draw)
    return imgs, labels, split, classes


# --------------------------------------------------------------------------------------------- housenums
def gen_housenums(rng, scale=1.0):
    """House-number style digits (SVHN-like): the centred digit is the label, neighbours are partly
    visible on both sides; random fonts, sizes, colours, rotation, clutter, blur and noise."""
    from mdl.core.data.builtin.render import FONTS, font

    counts = _counts((500, 150, 150), scale)

    def draw(c):
        plate = rand_colour(rng)
        bg = clutter(rng, n_strokes=(1, 5), strength=0.6) if rng.random() < 0.6 else Image.new("RGB", (S, S), plate)
        d = ImageDraw.Draw(bg)
        f = font(FONTS[rng.integers(len(FONTS))], int(rng.integers(22, 34)))
        ink = contrasting(rng, region_mean(bg), 70)
        left, right = str(rng.integers(10)), str(rng.integers(10))
        cx, cy = 20 + rng.uniform(-2.5, 2.5), 20 + rng.uniform(-2.5, 2.5)
        w = f.getlength(str(c))
        gap = rng.uniform(0.5, 3.5)
        if rng.random() < 0.8:
            d.text((cx - w / 2 - gap, cy), left, fill=ink, font=f, anchor="rm")
        if rng.random() < 0.8:
            d.text((cx + w / 2 + gap, cy), right, fill=ink, font=f, anchor="lm")
        d.text((cx, cy), str(c), fill=ink, font=f, anchor="mm")
        img = bg.rotate(rng.uniform(-10, 10), resample=Image.BILINEAR, center=(cx, cy), fillcolor=bg.getpixel((0, 0)))
        return finish(img, rng, noise=(2, 18), blur=(0, 1.3), gain=(0.5, 1.3))

    imgs, labels, split = _gen_classes(10, counts, draw)
    return imgs, labels, split, [str(d) for d in range(10)]


# --------------------------------------------------------------------------------------------- photos
PHOTOS = ["astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png", "coins.png",
          "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png",
          "page.png", "retina.jpg", "rocket.jpg"]


def _load_photo(name: str) -> Image.Image:
    import skimage

    path = os.path.join(os.path.dirname(skimage.__file__), "data", name)
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((384, 384), Image.BILINEAR)
        return im.copy()


def gen_photos(rng, scale=1.0):
    """16 classes = which of the real photographs scikit-image ships a random patch comes from (the
    photo's name). Patch size, position, brightness and contrast vary; some patches are grey-scaled,
    so colour alone doesn't tell them apart, and flat regions are ambiguous."""
    photos = [_load_photo(p) for p in PHOTOS]
    classes = [p.rsplit(".", 1)[0] for p in PHOTOS]
    counts = _counts((50, 25, 25), scale)

    def draw(c):
        im = photos[c]
        w, h = im.size
        side = int(min(w, h) * rng.uniform(0.15, 0.4))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        patch = im.resize((S, S), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
        if rng.random() < 0.25:
            patch = patch.convert("L").convert("RGB")
        return finish(patch, rng, noise=(0, 8), blur=(0, 0.8), gain=(0.7, 1.3))

    imgs, labels, split = _gen_classes(len(classes), counts, draw)
    return imgs, labels, split, classes


# --------------------------------------------------------------------------------------------- pedestrians
def gen_pedestrians(rng, scale=1.0):
    """2 classes (Daimler-like): a low-contrast stick figure in a random pose vs. none, on grey street
    clutter with poles, lamp posts and boxes in both classes (lamp posts are hard negatives)."""
    counts = _counts((1200, 400, 400), scale)

    def draw(c):
        bg = clutter(rng, n_strokes=(2, 6), gray=True, strength=0.7)
        d = ImageDraw.Draw(bg)
        base = int(np.asarray(bg).mean())
        for _ in range(int(rng.integers(1, 4))):  # poles / boxes / lamp posts
            g = int(np.clip(base + rng.choice([-1, 1]) * rng.integers(20, 90), 0, 255))
            x = rng.uniform(0, S)
            kind = rng.random()
            if kind < 0.4:
                d.line([x, rng.uniform(0, 10), x, S], fill=(g,) * 3, width=int(rng.integers(1, 4)))
            elif kind < 0.7:
                top = rng.uniform(4, 16)
                d.line([x, top, x, S], fill=(g,) * 3, width=2)
                r = rng.uniform(2, 4)
                d.ellipse([x - r, top - 2 * r, x + r, top], fill=(g,) * 3)
            else:
                x0, y0 = rng.uniform(0, S, 2)
                d.rectangle([x0, y0, x0 + rng.uniform(4, 14), y0 + rng.uniform(4, 14)], fill=(g,) * 3)
        if c == 1:
            g = int(np.clip(base + rng.choice([-1, 1]) * rng.integers(25, 100), 0, 255))
            col, wdt = (g,) * 3, int(rng.integers(2, 4))
            h = rng.uniform(22, 34)
            cx, top = 20 + rng.uniform(-5, 5), 20 - h / 2 + rng.uniform(-3, 3)
            r = h * 0.09
            d.ellipse([cx - r, top, cx + r, top + 2 * r], fill=col)
            neck, hip = (cx, top + 2 * r), (cx + rng.uniform(-1.5, 1.5), top + h * 0.55)
            d.line([neck, hip], fill=col, width=wdt + 1)
            for side in (-1, 1):
                d.line([(cx, top + h * 0.25), (cx + side * rng.uniform(2, 7), top + h * rng.uniform(0.4, 0.6))],
                       fill=col, width=wdt)
                d.line([hip, (hip[0] + side * rng.uniform(1, 7), top + h)], fill=col, width=wdt)
        return finish(bg, rng, noise=(3, 16), blur=(0.3, 1.4), gain=(0.6, 1.3))

    imgs, labels, split = _gen_classes(2, counts, draw)
    return imgs, labels, split, ["background", "pedestrian"]
