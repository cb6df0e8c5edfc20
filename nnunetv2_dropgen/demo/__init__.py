"""`nnunetv2_dropgen demo`: DropGen vs plain nnU-Net on a synthetic domain-shift dataset, end to end.

Kept empty on purpose: nnU-Net imports `nnunetv2_dropgen.demo.trainers` while it searches for trainers,
and that import should not pull in the pipeline (`run`), the figure or matplotlib.
"""
