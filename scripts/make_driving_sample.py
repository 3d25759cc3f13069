#!/usr/bin/env python
"""Write the synthetic road-scene detection sample (KITTI 2D object format) in ``plugins/tlapp_driving/sample_data/``.

    python scripts/make_driving_sample.py [--out plugins/tlapp_driving/sample_data] [--seed 20240917] [--images 100]

Everything is drawn here: a road in perspective with lane markings, roadside
buildings, trees and poles, and cars, vans and pedestrians seen from behind or
the side, sized by their distance, under day, overcast, dusk, night, fog and
rain. Nothing is copied from any real data set.

Output::

    image_2/000000.png ...   RGB, sizes 192x96 to 256x128 (2:1) and 256x96 (wide)
    label_2/000000.txt ...   one KITTI line per object:
        type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y

What a loader must cope with, on purpose:

* objects far away (box height under 9 px) are labelled ``DontCare``, as in KITTI;
* a few boxes of objects cut by the image border reach outside the image (to be clipped);
* about one image in twelve has no objects at all (negatives), with an empty label file;
* variable image sizes and two aspect ratios.

Deterministic: a fixed seed and only numpy's legacy RandomState and PIL drawing,
so the same files come out on every run (for the same numpy/Pillow versions).
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZES = [(256, 128), (240, 120), (224, 112), (208, 104), (192, 96), (256, 96)]
CONDITIONS = [("day", 0.42), ("overcast", 0.16), ("dusk", 0.12), ("night", 0.12), ("fog", 0.1), ("rain", 0.08)]
SUPER = 2  # draw at twice the size, then downscale: anti-aliased edges
ROAD_WIDTH_M = 10.5  # three lanes
CAR_COLOURS = [(200, 30, 30), (30, 60, 160), (230, 230, 230), (40, 40, 40), (150, 150, 155), (20, 110, 60),
               (220, 180, 30), (120, 70, 30), (90, 20, 90), (180, 190, 200)]
SHIRTS = [(200, 40, 40), (40, 90, 200), (240, 200, 40), (30, 150, 70), (230, 230, 230), (60, 60, 60), (240, 120, 30)]


@dataclass
class Thing:
    kind: str  # Car, Van, Pedestrian
    u: float  # across the road: 0 left edge, 1 right edge; outside: sidewalk
    t: float  # depth: 1 at the image bottom, smaller further away
    colour: tuple[int, int, int]
    facing: str  # "rear" or "side"


class Scene:
    def __init__(self, rng: np.random.RandomState, width: int, height: int):
        self.rng = rng
        self.W, self.H = width * SUPER, height * SUPER
        self.horizon = self.H * rng.uniform(0.36, 0.46)
        self.vx = self.W * rng.uniform(0.4, 0.6)
        self.left = -self.W * rng.uniform(0.05, 0.25)
        self.right = self.W * rng.uniform(1.05, 1.25)

    def y(self, t: float) -> float:
        return self.horizon + t * (self.H - self.horizon)

    def x(self, u: float, t: float) -> float:
        xl = self.vx + (self.left - self.vx) * t
        xr = self.vx + (self.right - self.vx) * t
        return xl + u * (xr - xl)

    def metres(self, t: float) -> float:
        """Pixels per metre at depth t."""
        return (self.right - self.left) * t / ROAD_WIDTH_M


def shade(colour, factor: float):
    return tuple(int(max(0, min(255, c * factor))) for c in colour)


def mix(a, b, w: float):
    return tuple(int(round(x * (1 - w) + y * w)) for x, y in zip(a, b))


def sky_and_ground(draw: ImageDraw.ImageDraw, scene: Scene, condition: str, light: float) -> None:
    tops = {"day": ((90, 150, 230), (190, 215, 240)), "overcast": ((150, 155, 165), (195, 198, 205)),
            "dusk": ((70, 60, 120), (245, 150, 80)), "night": ((5, 8, 25), (25, 30, 55)),
            "fog": ((185, 188, 192), (210, 212, 215)), "rain": ((95, 100, 110), (140, 145, 150))}
    top, bottom = tops[condition]
    h = int(scene.horizon)
    for row in range(h + 1):
        draw.line([(0, row), (scene.W, row)], fill=mix(top, bottom, row / max(h, 1)))
    grass = shade((70, 120, 60) if condition != "night" else (15, 25, 15), light)
    draw.rectangle([0, h, scene.W, scene.H], fill=grass)
    walk = shade((165, 160, 150), light)
    for _side, (u0, u1) in (("l", (-0.3, 0.0)), ("r", (1.0, 1.3))):
        draw.polygon([(scene.x(u0, 0), scene.y(0)), (scene.x(u1, 0), scene.y(0)),
                      (scene.x(u1, 1.2), scene.y(1.2)), (scene.x(u0, 1.2), scene.y(1.2))], fill=walk)
    road = shade((85, 85, 90) if condition != "rain" else (60, 62, 68), light)
    draw.polygon([(scene.x(0, 0), scene.y(0)), (scene.x(1, 0), scene.y(0)),
                  (scene.x(1, 1.2), scene.y(1.2)), (scene.x(0, 1.2), scene.y(1.2))], fill=road)


def lanes(draw: ImageDraw.ImageDraw, scene: Scene, light: float, rng: np.random.RandomState) -> None:
    paint = shade((235, 235, 225), light)
    for u in (0.02, 0.98):  # solid edge lines
        pts = [(scene.x(u, 0.02), scene.y(0.02)), (scene.x(u, 1.2), scene.y(1.2))]
        draw.line(pts, fill=paint, width=max(1, int(2 * SUPER * 0.6)))
    phase = rng.uniform(0, 1)
    for u in (1 / 3, 2 / 3):  # dashed dividers, spaced evenly in depth (1/t)
        for k in range(40):
            z0, z1 = 1.0 + (k + phase) * 1.6, 1.0 + (k + phase) * 1.6 + 0.8
            t0, t1 = 1.25 / z0, 1.25 / z1
            if t1 < 0.03:
                break
            half0, half1 = 0.012 * scene.metres(t0) * 3, 0.012 * scene.metres(t1) * 3
            draw.polygon([(scene.x(u, t0) - half0, scene.y(t0)), (scene.x(u, t0) + half0, scene.y(t0)),
                          (scene.x(u, t1) + half1, scene.y(t1)), (scene.x(u, t1) - half1, scene.y(t1))], fill=paint)


def roadside(draw: ImageDraw.ImageDraw, scene: Scene, light: float, rng: np.random.RandomState) -> None:
    """Buildings and trees along the horizon, poles at the roadside: clutter that is not an object."""
    x = -rng.uniform(0, 20)
    while x < scene.W:
        w = rng.uniform(0.06, 0.2) * scene.W
        h = rng.uniform(0.05, 0.22) * scene.H
        colour = shade(tuple(int(v) for v in rng.randint(90, 200, 3)), light)
        draw.rectangle([x, scene.horizon - h, x + w, scene.horizon + 1], fill=colour)
        for wx in np.arange(x + 3, x + w - 4, 7):
            for wy in np.arange(scene.horizon - h + 3, scene.horizon - 4, 7):
                draw.rectangle([wx, wy, wx + 3, wy + 3], fill=shade(colour, 0.6 if light > 0.5 else 2.5))
        x += w + rng.uniform(0, 0.05) * scene.W
    for _ in range(rng.randint(1, 4)):
        t = rng.uniform(0.2, 0.9)
        u = rng.choice([-0.15, 1.15]) + rng.uniform(-0.05, 0.05)
        px, py, m = scene.x(u, t), scene.y(t), scene.metres(t)
        if rng.rand() < 0.5:  # tree
            draw.rectangle([px - 0.15 * m, py - 2.5 * m, px + 0.15 * m, py], fill=shade((90, 60, 30), light))
            draw.ellipse([px - 1.3 * m, py - 5 * m, px + 1.3 * m, py - 2.2 * m], fill=shade((40, 100, 40), light))
        else:  # pole with a sign
            draw.rectangle([px - 0.06 * m, py - 4 * m, px + 0.06 * m, py], fill=shade((120, 120, 120), light))
            draw.rectangle([px - 0.4 * m, py - 4.2 * m, px + 0.4 * m, py - 3.5 * m], fill=shade((30, 80, 200), light))


def draw_vehicle(draw: ImageDraw.ImageDraw, scene: Scene, thing: Thing, light: float, night: bool):
    m = scene.metres(thing.t)
    width_m, height_m = (1.8, 1.5) if thing.kind == "Car" else (2.0, 2.2)
    if thing.facing == "side":
        width_m = 4.2 if thing.kind == "Car" else 5.0
    w, h = width_m * m, height_m * m
    cx, bottom = scene.x(thing.u, thing.t), scene.y(thing.t)
    x1, x2, y1, y2 = cx - w / 2, cx + w / 2, bottom - h, bottom
    body = shade(thing.colour, light)
    glass = shade((60, 80, 100), light) if not night else (10, 12, 18)
    draw.ellipse([x1 - 0.05 * w, y2 - 0.12 * h, x2 + 0.05 * w, y2 + 0.08 * h], fill=shade((25, 25, 28), light))
    if thing.facing == "rear":
        wheel = 0.12 * w
        draw.rectangle([x1 + 0.04 * w, y2 - 0.16 * h, x1 + 0.04 * w + wheel, y2], fill=(15, 15, 15))
        draw.rectangle([x2 - 0.04 * w - wheel, y2 - 0.16 * h, x2 - 0.04 * w, y2], fill=(15, 15, 15))
        if thing.kind == "Car":
            draw.rounded_rectangle([x1, y1 + 0.45 * h, x2, y2 - 0.1 * h], radius=max(1, 0.08 * w), fill=body)
            draw.polygon([(x1 + 0.12 * w, y1 + 0.45 * h), (x1 + 0.22 * w, y1), (x2 - 0.22 * w, y1),
                          (x2 - 0.12 * w, y1 + 0.45 * h)], fill=body)
            draw.polygon([(x1 + 0.18 * w, y1 + 0.42 * h), (x1 + 0.25 * w, y1 + 0.08 * h),
                          (x2 - 0.25 * w, y1 + 0.08 * h), (x2 - 0.18 * w, y1 + 0.42 * h)], fill=glass)
        else:
            draw.rounded_rectangle([x1, y1, x2, y2 - 0.1 * h], radius=max(1, 0.05 * w), fill=body)
            draw.rectangle([x1 + 0.1 * w, y1 + 0.08 * h, x2 - 0.1 * w, y1 + 0.38 * h], fill=glass)
            draw.line([(cx, y1 + 0.4 * h), (cx, y2 - 0.12 * h)], fill=shade(body, 0.7), width=1)
        lamp = (255, 40, 30) if night else shade((200, 30, 30), light)
        ly = y1 + (0.55 if thing.kind == "Car" else 0.6) * h
        draw.rectangle([x1 + 0.03 * w, ly, x1 + 0.17 * w, ly + 0.1 * h], fill=lamp)
        draw.rectangle([x2 - 0.17 * w, ly, x2 - 0.03 * w, ly + 0.1 * h], fill=lamp)
        if night:
            for lx in (x1 + 0.1 * w, x2 - 0.1 * w):
                draw.ellipse([lx - 0.12 * w, ly - 0.08 * h, lx + 0.12 * w, ly + 0.18 * h], outline=(255, 80, 60))
        draw.rectangle([cx - 0.12 * w, y2 - 0.3 * h, cx + 0.12 * w, y2 - 0.2 * h], fill=shade((235, 235, 235), light))
    else:
        wheel = 0.16 * h * 1.3
        front_left = thing.u > 0.5  # drives towards the road centre
        if thing.kind == "Car":
            draw.rounded_rectangle([x1, y1 + 0.4 * h, x2, y2 - 0.12 * h], radius=max(1, 0.1 * h), fill=body)
            draw.polygon([(x1 + 0.22 * w, y1 + 0.4 * h), (x1 + 0.32 * w, y1), (x2 - 0.3 * w, y1),
                          (x2 - 0.15 * w, y1 + 0.4 * h)], fill=body)
            draw.polygon([(x1 + 0.27 * w, y1 + 0.38 * h), (x1 + 0.34 * w, y1 + 0.08 * h),
                          (x2 - 0.32 * w, y1 + 0.08 * h), (x2 - 0.2 * w, y1 + 0.38 * h)], fill=glass)
        else:
            draw.rounded_rectangle([x1, y1, x2, y2 - 0.12 * h], radius=max(1, 0.06 * h), fill=body)
            wx = (x1 + 0.05 * w, x1 + 0.25 * w) if front_left else (x2 - 0.25 * w, x2 - 0.05 * w)
            draw.rectangle([wx[0], y1 + 0.1 * h, wx[1], y1 + 0.4 * h], fill=glass)
        for wxc in (x1 + 0.2 * w, x2 - 0.2 * w):
            draw.ellipse([wxc - wheel / 2, y2 - wheel, wxc + wheel / 2, y2], fill=(15, 15, 15))
        if night:
            hx = x1 if front_left else x2
            draw.ellipse([hx - 0.1 * h, y1 + 0.5 * h, hx + 0.1 * h, y1 + 0.7 * h], fill=(255, 250, 200))
    return x1, y1, x2, y2


def draw_pedestrian(draw: ImageDraw.ImageDraw, scene: Scene, thing: Thing, light: float, rng):
    m = scene.metres(thing.t)
    h = rng.uniform(1.55, 1.9) * m
    w = 0.38 * h
    cx, bottom = scene.x(thing.u, thing.t), scene.y(thing.t)
    x1, x2, y1, y2 = cx - w / 2, cx + w / 2, bottom - h, bottom
    skin = shade(tuple(int(v) for v in rng.randint(120, 230, 3) * np.array([1.0, 0.8, 0.65])), light)
    shirt = shade(thing.colour, light)
    trousers = shade((40, 40, 60) if rng.rand() < 0.6 else (120, 100, 70), light)
    head = 0.13 * h
    draw.ellipse([cx - head / 2, y1, cx + head / 2, y1 + head], fill=skin)
    draw.rounded_rectangle([cx - 0.3 * w, y1 + head, cx + 0.3 * w, y1 + 0.55 * h], radius=max(1, 0.1 * w), fill=shirt)
    stride = rng.uniform(0, 0.45) * w
    draw.polygon([(cx - 0.25 * w, y1 + 0.55 * h), (cx, y1 + 0.55 * h), (cx - stride / 2, y2),
                  (cx - stride / 2 - 0.18 * w, y2)], fill=trousers)
    draw.polygon([(cx, y1 + 0.55 * h), (cx + 0.25 * w, y1 + 0.55 * h), (cx + stride / 2 + 0.18 * w, y2),
                  (cx + stride / 2, y2)], fill=trousers)
    draw.line([(cx - 0.3 * w, y1 + head + 2), (x1, y1 + 0.5 * h)], fill=shirt, width=max(1, int(0.12 * w)))
    draw.line([(cx + 0.3 * w, y1 + head + 2), (x2, y1 + 0.5 * h)], fill=shirt, width=max(1, int(0.12 * w)))
    return x1, y1, x2, y2


def place(rng: np.random.RandomState, empty: bool) -> list[Thing]:
    if empty:
        return []
    things: list[Thing] = []
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 3, 4])):
        kind = "Car" if rng.rand() < 0.75 else "Van"
        lane = rng.choice([1 / 6, 0.5, 5 / 6])
        facing = "rear" if rng.rand() < 0.8 else "side"
        u = lane + rng.uniform(-0.05, 0.05) if facing == "rear" else rng.uniform(0.2, 0.8)
        depth = rng.uniform(0.12, 1.05) if facing == "rear" else rng.uniform(0.12, 0.6)
        things.append(Thing(kind, u, depth, CAR_COLOURS[rng.randint(len(CAR_COLOURS))], facing))
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        u = rng.choice([rng.uniform(-0.25, -0.04), rng.uniform(1.04, 1.25), rng.uniform(0.05, 0.95)],
                       p=[0.4, 0.4, 0.2])
        things.append(Thing("Pedestrian", float(u), rng.uniform(0.2, 1.0), SHIRTS[rng.randint(len(SHIRTS))], "rear"))
    if not things:
        things.append(Thing("Car", 0.5, rng.uniform(0.3, 0.9), CAR_COLOURS[rng.randint(len(CAR_COLOURS))], "rear"))
    # keep vehicles apart: drop one whose footprint overlaps a nearer vehicle's in the same lane and depth
    kept: list[Thing] = []
    for th in sorted(things, key=lambda th: -th.t):
        if any(abs(th.t - o.t) < 0.08 and abs(th.u - o.u) < 0.22 for o in kept):
            continue
        kept.append(th)
    return sorted(kept, key=lambda th: th.t)  # far first: nearer objects are drawn over them


def weather(image: Image.Image, scene: Scene, condition: str, rng: np.random.RandomState) -> Image.Image:
    if condition == "fog":
        arr = np.asarray(image).astype(np.float32)
        rows = np.arange(scene.H, dtype=np.float32)[:, None, None]
        depth = np.clip((rows - scene.horizon) / (scene.H - scene.horizon), 0, 1)
        amount = rng.uniform(0.45, 0.7) * (1 - depth) ** 1.5 + 0.15
        arr = arr * (1 - amount) + 200 * amount
        image = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    if condition == "rain":
        draw = ImageDraw.Draw(image)
        slant = rng.uniform(-3, 3)
        for _ in range(int(scene.W * scene.H / 900)):
            x, y = rng.uniform(0, scene.W), rng.uniform(0, scene.H)
            draw.line([(x, y), (x + slant, y + 10)], fill=(175, 180, 190), width=1)
        image = image.filter(ImageFilter.GaussianBlur(0.6))
    return image


def truncation(box, width: int, height: int) -> float:
    x1, y1, x2, y2 = box
    area = max(x2 - x1, 1e-6) * max(y2 - y1, 1e-6)
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    inside = max(cx2 - cx1, 0) * max(cy2 - cy1, 0)
    return float(np.clip(1 - inside / area, 0, 1))


def make_image(rng: np.random.RandomState, index: int, empty: bool) -> tuple[Image.Image, list[str]]:
    width, height = SIZES[rng.randint(len(SIZES))]
    names, probs = zip(*CONDITIONS)
    condition = str(rng.choice(names, p=np.array(probs) / sum(probs)))
    light = {"day": 1.0, "overcast": 0.85, "dusk": 0.7, "night": 0.32, "fog": 0.95, "rain": 0.75}[condition]
    light *= rng.uniform(0.85, 1.15)
    scene = Scene(rng, width, height)
    image = Image.new("RGB", (scene.W, scene.H))
    draw = ImageDraw.Draw(image)
    sky_and_ground(draw, scene, condition, light)
    lanes(draw, scene, light, rng)
    roadside(draw, scene, light, rng)
    drawn = []
    for thing in place(rng, empty):
        if thing.kind == "Pedestrian":
            box = draw_pedestrian(draw, scene, thing, light, rng)
        else:
            box = draw_vehicle(draw, scene, thing, light, condition == "night")
        drawn.append((thing, [v / SUPER for v in box]))
    image = weather(image, scene, condition, rng)
    image = image.resize((width, height), Image.LANCZOS)
    arr = np.asarray(image).astype(np.float32) + rng.normal(0, 0.8 if condition != "night" else 2.0,
                                                          (height, width, 3))
    image = Image.fromarray(arr.clip(0, 255).astype(np.uint8))

    lines = []
    for k, (thing, box) in enumerate(drawn):
        x1, y1, x2, y2 = box
        trunc = truncation(box, width, height)
        if trunc >= 0.9 or min(x2, width) - max(x1, 0) < 3 or min(y2, height) - max(y1, 0) < 3:
            continue  # (almost) out of the picture
        nearer = [b for th, b in drawn[k + 1:]]
        covered = max((max(0, min(x2, b[2]) - max(x1, b[0])) * max(0, min(y2, b[3]) - max(y1, b[1]))
                       for b in nearer), default=0) / max((x2 - x1) * (y2 - y1), 1e-6)
        occluded = 0 if covered < 0.1 else 1 if covered < 0.5 else 2
        if occluded == 2 and covered > 0.8:
            continue  # hidden: not labelled
        if trunc > 0 and rng.rand() < 0.6:  # most labels are clipped to the image, as in KITTI
            x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width - 1), min(y2, height - 1)
        kind = thing.kind if (y2 - y1) >= 9 else "DontCare"
        size_m = {"Car": (1.5, 1.8, 4.2), "Van": (2.2, 2.0, 5.0), "Pedestrian": (1.75, 0.6, 0.8)}[thing.kind]
        depth = 1.6 * 12 / max(thing.t, 0.05)
        ry = -1.57 if thing.facing == "rear" else 0.0
        if kind == "DontCare":
            lines.append(f"DontCare -1 -1 -10 {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} -1 -1 -1 -1000 -1000 -1000 -10")
        else:
            lines.append(f"{kind} {trunc:.2f} {occluded} {ry:.2f} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} "
                         f"{size_m[0]:.2f} {size_m[1]:.2f} {size_m[2]:.2f} {(thing.u - 0.5) * ROAD_WIDTH_M:.2f} "
                         f"1.65 {depth:.2f} {ry:.2f}")
    return image, lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "plugins/tlapp_driving/sample_data"))
    parser.add_argument("--seed", type=int, default=20240917)
    parser.add_argument("--images", type=int, default=100)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    (out / "image_2").mkdir(parents=True)
    (out / "label_2").mkdir()
    rng = np.random.RandomState(args.seed)
    empties = set(rng.choice(args.images, size=max(1, args.images // 12), replace=False).tolist())
    counts: dict[str, int] = {}
    for i in range(args.images):
        image, lines = make_image(rng, i, i in empties)
        image.save(out / "image_2" / f"{i:06d}.png", optimize=True)
        (out / "label_2" / f"{i:06d}.txt").write_text("".join(line + "\n" for line in lines))
        for line in lines:
            counts[line.split()[0]] = counts.get(line.split()[0], 0) + 1
    (out / "README.md").write_text(
        "# Synthetic road scenes (KITTI 2D object format)\n\n"
        f"Made by `scripts/make_driving_sample.py --seed {args.seed} --images {args.images}`; every pixel is drawn "
        "by that script (no real data).\n\n"
        "`image_2/NNNNNN.png` with `label_2/NNNNNN.txt` (KITTI: type truncated occluded alpha x1 y1 x2 y2 h w l "
        "x y z rotation_y). Classes: Car, Van, Pedestrian; far objects (under 9 px tall) are DontCare; "
        f"{len(empties)} images have no objects.\n\nLabels: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + "\n")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {args.images} images to {out} ({size / 1e6:.2f} MB): {counts}")


if __name__ == "__main__":
    main()
