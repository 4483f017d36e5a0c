"""`torchrun --nproc-per-node N -m dualkd_edge.train DATA --out RUN ...`: the `train` command's
options, one process per GPU (NCCL) or per CPU share (gloo); torchrun sets RANK / WORLD_SIZE."""

import sys

from dualkd_edge.cli import main

sys.argv = ["dualkd-edge", "train", *sys.argv[1:]]
main()
