"""Readers the tests check generated server configurations with: DeepStream's INI key files and
Triton's config.pbtxt, each parsed as strictly as the server itself parses it."""

from __future__ import annotations

from pathlib import Path


def read_ini(path: Path):
    """DeepStream's key files are INI (GLib key files): configparser reads them; a key it cannot
    read, or a section twice, is an error here as it is in GLib."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive there
    parser.read_string(Path(path).read_text(), str(path))
    return parser


def parse_config(text: str):
    """config.pbtxt -> Triton's ModelConfig protobuf (tritonclient's copy of the schema); a field
    Triton does not know is an error here as it is in the server."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        import pytest

        pytest.skip("tritonclient is not installed: pip install 'dualkd-edge[triton]'")
    return text_format.Parse(text, model_config_pb2.ModelConfig())
