"""The folder to put in `nnUNet_extTrainer` (print it with `nnunetv2_dropgen trainer-dir`)."""
