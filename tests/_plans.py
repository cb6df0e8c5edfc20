"""Hand-made nnU-Net plans (the structure nnUNetv2_plan_and_preprocess writes) for trainer unit tests."""

from __future__ import annotations

import copy
from pathlib import Path

_PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
_RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def _architecture(dims: int, residual: bool) -> dict:
    conv = f"torch.nn.modules.conv.Conv{dims}d"
    norm = f"torch.nn.modules.instancenorm.InstanceNorm{dims}d"
    kwargs = {
        "n_stages": 3,
        "features_per_stage": [8, 16, 32],
        "conv_op": conv,
        "kernel_sizes": [[3] * dims] * 3,
        "strides": [[1] * dims, [2] * dims, [2] * dims],
        "n_conv_per_stage_decoder": [1, 1],
        "conv_bias": True,
        "norm_op": norm,
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    if residual:
        kwargs["n_blocks_per_stage"] = [1, 1, 2]
    else:
        kwargs["n_conv_per_stage"] = [1, 1, 1]
    return {
        "network_class_name": _RESENC if residual else _PLAIN,
        "arch_kwargs": kwargs,
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _configuration(dims: int, num_channels: int, residual: bool) -> dict:
    return {
        "data_identifier": f"nnUNetPlans_{dims}d",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": [32] * dims,
        "median_image_size_in_voxels": [40.0] * dims,
        "spacing": [1.0] * dims,
        "normalization_schemes": ["ZScoreNormalization"] * num_channels,
        "use_mask_for_norm": [False] * num_channels,
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": _architecture(dims, residual),
        "batch_dice": False,
    }


def make_plans(num_channels: int = 1, residual: bool = False) -> dict:
    """Plans with 2d, 3d_fullres, 3d_lowres and 3d_cascade_fullres configurations."""
    full = _configuration(3, num_channels, residual)
    return copy.deepcopy(
        {
            "dataset_name": "Dataset999_Unit",
            "plans_name": "nnUNetResEncUNetMPlans" if residual else "nnUNetPlans",
            "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
            "original_median_shape_after_transp": [40, 40, 40],
            "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2],
            "transpose_backward": [0, 1, 2],
            "configurations": {
                "2d": _configuration(2, num_channels, residual),
                "3d_fullres": full,
                "3d_lowres": {
                    **_configuration(3, num_channels, residual),
                    "data_identifier": "nnUNetPlans_3d_lowres",
                    "spacing": [2.0, 2.0, 2.0],
                    "next_stage": "3d_cascade_fullres",
                },
                "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
            },
            "experiment_planner_used": "ExperimentPlanner",
            "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {
                str(c): {
                    "max": 1.0,
                    "mean": 0.5,
                    "median": 0.5,
                    "min": 0.0,
                    "percentile_00_5": 0.0,
                    "percentile_99_5": 1.0,
                    "std": 0.1,
                }
                for c in range(num_channels)
            },
        }
    )


def make_dataset_json(num_channels: int = 1) -> dict:
    return {
        "channel_names": {str(c): f"MR{c}" for c in range(num_channels)},
        "labels": {"background": 0, "shell": 1, "core": 2},
        "numTraining": 5,
        "file_ending": ".nii.gz",
    }


def documented_trainer_names() -> list[str]:
    """Every trainer name the README mentions (in backticks): each must be found by nnU-Net and build."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    names = re.findall(r"`((?:DropGenTrainer|nnUNetTrainer[A-Za-z0-9]*)(?:_[A-Za-z0-9]+)*)`", readme)
    baseline = re.compile(r"^nnUNetTrainer(DA5)?_(quick|demo|demoTiny|demoGPU|\d+epochs?)$")
    # nnU-Net's own trainers named in the README (nnUNetTrainerDA5, nnUNetTrainer_250epochs, ...) are not ours
    return sorted({n for n in names if "DropGen" in n or baseline.match(n)})
