"""A generated multi-class production-line dataset (MVTec-AD layout) for the demo and the tests.

Two part kinds (washer, bracket) on a textured conveyor background with small pose and lighting
variation. Structural defects: scratch, spot, missing piece (with pixel masks). Semantic anomaly:
a part of another kind ("wrong_part", an unseen hex nut) in each category's test split.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

PART_KINDS = ("washer", "bracket")
DEFECTS = ("scratch", "spot", "missing", "wrong_part")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(70, 90)
    noise = cv2.resize(rng.normal(0, 6, (size // 8, size // 8)).astype(np.float32), (size, size))
    grain = rng.normal(0, 2, (size, size)).astype(np.float32)
    bg = base + noise + grain
    return np.repeat(bg[:, :, None], 3, axis=2) * np.array([1.0, 1.02, 1.05], np.float32)


def _part_mask(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    c = size / 2 + rng.uniform(-4, 4, 2)
    angle = rng.uniform(-10, 10)
    if kind == "washer":
        r = size * 0.32 + rng.uniform(-1.5, 1.5)
        cv2.circle(mask, (int(c[0]), int(c[1])), int(r), 255, -1, cv2.LINE_AA)
        cv2.circle(mask, (int(c[0]), int(c[1])), int(r * 0.45), 0, -1, cv2.LINE_AA)
    elif kind == "bracket":
        box = cv2.boxPoints(((c[0], c[1]), (size * 0.7, size * 0.38), angle)).astype(np.int32)
        cv2.fillPoly(mask, [box], 255, cv2.LINE_AA)
        rad = np.deg2rad(angle)
        for s in (-1, 1):
            hx = c[0] + s * size * 0.22 * np.cos(rad)
            hy = c[1] + s * size * 0.22 * np.sin(rad)
            cv2.circle(mask, (int(hx), int(hy)), int(size * 0.06), 0, -1, cv2.LINE_AA)
    elif kind == "hexnut":
        r = size * 0.3
        pts = np.array([(c[0] + r * np.cos(np.deg2rad(angle + 60 * i)),
                         c[1] + r * np.sin(np.deg2rad(angle + 60 * i))) for i in range(6)], np.int32)
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA)
        cv2.circle(mask, (int(c[0]), int(c[1])), int(r * 0.4), 0, -1, cv2.LINE_AA)
    else:
        raise ValueError(kind)
    return mask


PART_COLOURS = {"washer": (175, 170, 160), "bracket": (60, 110, 170), "hexnut": (120, 190, 200)}


def _render(kind: str, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    img = _background(rng, size)
    mask = _part_mask(kind, rng, size)
    light = rng.uniform(0.9, 1.1)
    colour = np.array(PART_COLOURS[kind], np.float32) * light
    shade = np.linspace(0.92, 1.08, size, dtype=np.float32)[None, :, None]  # a lighting gradient
    alpha = (mask.astype(np.float32) / 255.0)[:, :, None]
    part = colour[None, None, :] * shade + rng.normal(0, 3, (size, size, 1)).astype(np.float32)
    img = img * (1 - alpha) + part * alpha
    return img, mask


def _add_defect(defect: str, img: np.ndarray, part: np.ndarray, rng: np.random.Generator,
                size: int, category: str) -> tuple[np.ndarray, np.ndarray]:
    defect_mask = np.zeros((size, size), np.uint8)
    ys, xs = np.nonzero(part > 127)
    i = rng.integers(len(ys))
    cy, cx = int(ys[i]), int(xs[i])
    if defect == "scratch":
        length = rng.uniform(0.2, 0.35) * size
        theta = rng.uniform(0, np.pi)
        p1 = (int(cx - length / 2 * np.cos(theta)), int(cy - length / 2 * np.sin(theta)))
        p2 = (int(cx + length / 2 * np.cos(theta)), int(cy + length / 2 * np.sin(theta)))
        cv2.line(defect_mask, p1, p2, 255, max(2, size // 64), cv2.LINE_AA)
        defect_mask = cv2.bitwise_and(defect_mask, part)
        img = np.where(defect_mask[:, :, None] > 0, img * 0.45, img)
    elif defect == "spot":
        r = int(rng.uniform(0.05, 0.08) * size)
        cv2.circle(defect_mask, (cx, cy), r, 255, -1, cv2.LINE_AA)
        defect_mask = cv2.bitwise_and(defect_mask, part)
        tint = np.array([40, 60, 200] if rng.random() < 0.5 else [20, 20, 20], np.float32)
        img = np.where(defect_mask[:, :, None] > 0, 0.3 * img + 0.7 * tint, img)
    elif defect == "missing":
        r = int(rng.uniform(0.1, 0.14) * size)
        cv2.circle(defect_mask, (cx, cy), r, 255, -1)
        defect_mask = cv2.bitwise_and(defect_mask, part)
        background = _background(rng, size)
        img = np.where(defect_mask[:, :, None] > 0, background, img)
    elif defect == "wrong_part":
        # A part of a kind never seen in training: a semantic anomaly, not a local one.
        img, defect_mask = _render("hexnut", rng, size)
    else:
        raise ValueError(defect)
    return img, defect_mask


def _save(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.clip(img, 0, 255).astype(np.uint8))


def render_part(kind: str, seed: int, size: int = 128, defect: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One BGR uint8 image of a part (and its defect mask) — used for streams and videos too."""
    rng = np.random.default_rng(seed)
    img, part = _render(kind, rng, size)
    mask = np.zeros((size, size), np.uint8)
    if defect is not None:
        img, mask = _add_defect(defect, img, part, rng, size, kind)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def generate_dataset(out: Path, n_train: int = 80, n_test_good: int = 20, n_test_defect: int = 8,
                     size: int = 128, seed: int = 0, kinds: tuple[str, ...] = PART_KINDS) -> Path:
    """Write `<out>/<kind>/{train/good,test/<defect>,ground_truth/<defect>}` and return `out`."""
    out = Path(out)
    for k_index, kind in enumerate(kinds):
        base = seed * 1_000_003 + k_index * 100_000
        root = out / kind
        for i in range(n_train):
            img, _ = render_part(kind, base + i, size)
            _save(root / "train" / "good" / f"{i:04d}.png", img)
        for i in range(n_test_good):
            img, _ = render_part(kind, base + 50_000 + i, size)
            _save(root / "test" / "good" / f"{i:04d}.png", img)
        for d_index, defect in enumerate(DEFECTS):
            for i in range(n_test_defect):
                img, mask = render_part(kind, base + 60_000 + d_index * 1000 + i, size, defect)
                _save(root / "test" / defect / f"{i:04d}.png", img)
                _save(root / "ground_truth" / defect / f"{i:04d}_mask.png", mask)
    return out


LINE_VIDEO_DEFECTS = (None, None, None, "scratch", None, None, "spot", None, "missing", None)


def line_video_defect(frame: int, defect_share: bool = True) -> str | None:
    """The defect on frame `frame` of `write_line_video` (None: a good part)."""
    return LINE_VIDEO_DEFECTS[frame % 10] if defect_share else None


def write_line_video(path: Path, n: int = 120, size: int = 128, fps: float = 30.0, seed: int = 70_000,
                     defects: bool = True) -> Path:
    """A production-line camera video (OpenCV's mp4v): parts of both kinds pass by, 3 in 10 with a
    defect (`line_video_defect`), or all good (`defects=False`: a commissioning run)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    for i in range(n):
        writer.write(render_part(PART_KINDS[i % 2], seed + i, size=size, defect=line_video_defect(i, defects))[0])
    writer.release()
    return path


# -- camera videos: the same parts as the stills, filmed ------------------------------------------------
STRUCTURAL_DEFECTS = ("scratch", "spot", "missing")


def add_fixture(img: np.ndarray) -> np.ndarray:
    """A new fixture in the frame (a clamp at the left edge): a normal variation the stills lack."""
    out = img.copy()
    h, w = out.shape[:2]
    cv2.rectangle(out, (0, h // 2 - h // 10), (w // 7, h // 2 + h // 10), (150, 155, 160), -1)
    cv2.rectangle(out, (0, h // 2 - h // 10), (w // 7, h // 2 + h // 10), (60, 60, 60), 2)
    return out


def camera_frames(n: int, seed: int, defect_every: int | None = None, lamp: float = 1.0, blur: float = 0.0,
                  size: int = 128, fixture_every: int | None = None) -> list[tuple[np.ndarray, str | None]]:
    """`n` camera frames of parts of both kinds, (frame, defect or None): about one in `defect_every`
    defective (None: all good). `lamp` scales the light (0.6: a dimmed lamp) and `blur` (Gaussian
    sigma, px) puts the lens slightly out of focus; every `fixture_every`-th frame shows a new fixture
    (`add_fixture`)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        defect = None
        if defect_every and rng.random() < 1.0 / defect_every:
            defect = STRUCTURAL_DEFECTS[int(rng.integers(len(STRUCTURAL_DEFECTS)))]
        img, _ = render_part(PART_KINDS[i % 2], seed * 7919 + i, size=size, defect=defect)
        if fixture_every and i % fixture_every == 0:
            img = add_fixture(img)
        img = img.astype(np.float32) * lamp + rng.normal(0, 1.5, img.shape)  # lamp, sensor noise
        if blur > 0:
            img = cv2.GaussianBlur(img, (0, 0), blur)
        frames.append((np.clip(img, 0, 255).astype(np.uint8), defect))
    return frames


def write_h264(path: Path, frames: list[np.ndarray], fps: float = 25.0, crf: int = 23) -> Path:
    """An H.264 (libx264, yuv420p) video as IP cameras send it, encoded by ffmpeg."""
    import shutil
    import subprocess

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg is needed to write H.264 videos")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    cmd = [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}",
           "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf),
           "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, input=b"".join(np.ascontiguousarray(f).tobytes() for f in frames), check=True)
    return path
