"""nnU-Net's defaults that `evaluate` and `splits` use, in a module that imports nothing (the CLI reads them)."""

DEFAULT_PLANS = "nnUNetPlans"
DEFAULT_CONFIGURATION = "3d_fullres"
DEFAULT_CHECKPOINT = "checkpoint_final.pth"
SPLITS_FILE = "splits_final.json"
SITES_FILE = "splits_sites.json"
NNUNET_SEED = 12345
"""The seed of nnU-Net's default 5-fold split (nnUNetTrainer.do_split)."""
NNUNET_FOLDS = 5
