"""Inference backends behind one interface. Nothing on this path imports torch
(except the optional run-directory backend, which exists for parity checks)."""
