"""Serving past one camera and one box: a Triton model repository (`triton_repository`), the model
Triton's Python backend runs (`triton_python_model`), tritonserver from PyPI's wheel
(`triton_server`), and DeepStream configs (`deepstream`). The Triton client is a runtime Backend
(`dualkd_edge/runtime/triton_backend.py`). Torch-free."""
