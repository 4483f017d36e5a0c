"""Class-folder layout for semantic anomaly detection (CIFAR-10 / FMNIST one-vs-rest style):
`<root>/<class>/*.png`; the listed normal classes are normal, every other class is an anomaly."""

from __future__ import annotations

from pathlib import Path

from dualkd_edge.data.discovery import Category, Sample, list_images
from dualkd_edge.errors import UserError


def class_folder_categories(roots: list[Path], normal_classes: list[str]) -> list[Category]:
    if not normal_classes:
        raise UserError("--normal-classes: give at least one class name")
    cats = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"DATA: not a folder: {root}")
        class_dirs = {p.name: p for p in sorted(root.iterdir()) if p.is_dir()}
        unknown = [c for c in normal_classes if c not in class_dirs]
        if unknown:
            raise UserError(f"--normal-classes: {', '.join(unknown)} not found in {root} "
                            f"(classes there: {', '.join(class_dirs) or 'none'})")
        cat = Category(name=root.name, root=root)
        for name, folder in class_dirs.items():
            label = 0 if name in normal_classes else 1
            cat.test += [Sample(p, root.name, label, "good" if label == 0 else name) for p in list_images(folder)]
        if not any(s.label for s in cat.test):
            raise UserError(f"DATA: {root} has no class outside --normal-classes to serve as anomalies")
        cats.append(cat)
    return cats
