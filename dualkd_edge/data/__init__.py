"""Datasets: MVTec-AD layouts, plain folders, class folders, and the generated demo data (no torch)."""
