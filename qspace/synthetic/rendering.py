"""Drawing a scene as an RGB image with Pillow (no torch: demo data must not need the model stack)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from qspace.synthetic.scenes import BACKGROUNDS, COLORS, SHAPES, Scene

WORD_INK = (25, 25, 25)  # near-black: no object colour is this dark, so the word never hides in a shape


def unit_outline(shape: str) -> list[tuple[float, float]]:
    """The shape's polygon on a unit radius around the origin, y down (circles are drawn as ellipses)."""

    def ring(k: int, radii: Sequence[float], dy: float = 0.0) -> list[tuple[float, float]]:
        """k points evenly round the circle from the top, cycling through `radii` (a star alternates two)."""
        out = []
        for i in range(k):
            a = math.pi / 2 + 2 * math.pi * i / k
            rad = radii[i % len(radii)]
            out.append((rad * math.cos(a), -rad * math.sin(a) + dy))
        return out

    if shape == "square":
        h = 0.85  # a square of the full radius looks bigger than a circle of it
        return [(-h, -h), (h, -h), (h, h), (-h, h)]
    if shape == "triangle":
        return ring(3, [1.0], 0.15)  # shifted down so its visual centre sits on the object's centre
    if shape == "star":
        return ring(10, [1.0, 0.45], 0.05)
    if shape == "diamond":
        return [(0.0, -1.0), (0.75, 0.0), (0.0, 1.0), (-0.75, 0.0)]
    if shape == "hexagon":
        return [(math.cos(math.pi * i / 3), math.sin(math.pi * i / 3)) for i in range(6)]
    if shape == "cross":
        w, e = 0.32, 0.95  # half the arm width, arm length
        return [
            (-w, -e),
            (w, -e),
            (w, -w),
            (e, -w),
            (e, w),
            (w, w),
            (w, e),
            (-w, e),
            (-w, w),
            (-e, w),
            (-e, -w),
            (-w, -w),
        ]
    if shape == "heart":
        # The classic parametric heart, scaled into the unit circle and nudged down to centre it.
        pts = []
        for i in range(60):
            a = 2 * math.pi * i / 60
            x = 16 * math.sin(a) ** 3
            y = -(13 * math.cos(a) - 5 * math.cos(2 * a) - 2 * math.cos(3 * a) - math.cos(4 * a))
            pts.append((x / 16.5, (y + 2.5) / 16.5))
        return pts
    raise ValueError(f"unknown shape {shape!r}")


UNIT_OUTLINES = {s: unit_outline(s) for s in SHAPES if s != "circle"}


@lru_cache(maxsize=8)
def font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at `px`: no system font files needed."""
    return ImageFont.load_default(size=px)


def render_scene(scene: Scene, size: int = 128) -> Image.Image:
    """The scene drawn at `size` px: drawn at 2x and halved, for clean anti-aliased edges."""
    big = size * 2
    im = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(im)
    for o in scene.objects:
        cx, cy, r = o.cx * big, o.cy * big, o.r * big
        fill = COLORS[o.color]
        if o.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        else:
            draw.polygon([(cx + x * r, cy + y * r) for x, y in UNIT_OUTLINES[o.shape]], fill=fill)
    word_font = font(max(8, round(0.12 * big)))
    x0, y0, x1, y1 = draw.textbbox((0, 0), scene.word, font=word_font, stroke_width=1)
    w, h = x1 - x0, y1 - y0
    margin = round(0.04 * big)
    x = margin if "left" in scene.corner else big - margin - w
    y = margin if "top" in scene.corner else big - margin - h
    draw.text((x - x0, y - y0), scene.word, fill=WORD_INK, font=word_font, stroke_width=1, stroke_fill=WORD_INK)
    return im.reduce(2)
