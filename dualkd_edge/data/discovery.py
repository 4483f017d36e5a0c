"""Find the images of MVTec-AD style datasets (one or many categories) and plain folders."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from dualkd_edge.errors import UserError
from dualkd_edge.fileio import is_image_file

log = logging.getLogger("dualkd_edge")


@dataclass
class Sample:
    path: Path
    category: str
    label: int  # 0 normal, 1 anomalous
    defect: str = "good"
    mask_path: Path | None = None


@dataclass
class Category:
    name: str
    root: Path
    train: list[Path] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p)) if folder.is_dir() else []


def _is_mvtec_category(path: Path) -> bool:
    # A test-only copy (no train/) is still a category: `eval` needs nothing else.
    return (path / "train" / "good").is_dir() or (path / "test").is_dir()


def _load_category(root: Path) -> Category:
    cat = Category(name=root.name, root=root, train=list_images(root / "train" / "good"))
    test_root = root / "test"
    if test_root.is_dir():
        for defect_dir in sorted(p for p in test_root.iterdir() if p.is_dir()):
            defect = defect_dir.name
            for img in list_images(defect_dir):
                mask = root / "ground_truth" / defect / f"{img.stem}_mask.png"
                cat.test.append(Sample(
                    path=img, category=cat.name, label=0 if defect == "good" else 1, defect=defect,
                    mask_path=mask if mask.is_file() else None,
                ))
    return cat


def discover(root: Path) -> list[Category]:
    """Categories under `root`: an MVTec category, a folder of categories, or a plain image folder."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"DATA: path not found: {root}")
    if root.is_file():
        raise UserError(f"DATA: {root} is a file; expected a folder of images or an MVTec-AD style dataset")
    if _is_mvtec_category(root):
        return [_load_category(root)]
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    cats = [_load_category(p) for p in subdirs if _is_mvtec_category(p)]
    if cats:
        return cats
    images = list_images(root)
    if images:
        return [Category(name=root.name, root=root, train=images)]
    raise UserError(
        f"DATA: {root} holds no images; expected <category>/train/good/*.png (MVTec-AD layout), "
        "several such categories, or a plain folder of good images"
    )


def discover_all(roots: list[Path]) -> list[Category]:
    cats: list[Category] = []
    seen: set[str] = set()
    for root in roots:
        for cat in discover(root):
            name = cat.name
            i = 2
            while name in seen:  # two roots may hold a category of the same name
                name = f"{cat.name}_{i}"
                i += 1
            cat.name = name
            for s in cat.test:
                s.category = name
            seen.add(name)
            cats.append(cat)
    return cats
