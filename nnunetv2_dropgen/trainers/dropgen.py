"""DropGen as a mixin: wraps the network of whatever nnU-Net trainer it is combined with.

`class MyDropGen(DropGen, MyTrainer)` in a folder of `nnUNet_extTrainer` gives DropGen with everything else of
`MyTrainer` unchanged: its augmentation, loss, schedule and optimizer. Everything that shapes the network comes
from class attributes (so from the trainer name) and the plans, which is what nnU-Net's predictor has:
inference rebuilds the same network and takes the extractor weights from the checkpoint. Published extractor
weights are loaded only when a training run starts from scratch. Whatever the base does, the extractor
stays frozen: never trainable, never in the optimizer, never in training mode (a base that breaks that is
refused with a sentence).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunetv2_dropgen import __version__
from nnunetv2_dropgen.feature_extractors import get_extractor_spec
from nnunetv2_dropgen.network import DropGenNetwork, build_dropgen_network, load_extractor_weights
from nnunetv2_dropgen.plans import (
    CT_NORMALIZATION,
    CTStatisticsWarning,
    configurations_to_preprocess,
    ct_channels,
    holds_preprocessed_data,
    preprocessed_as,
)
from nnunetv2_dropgen.trainers.layout import channel_layout, require_3d
from nnunetv2_dropgen.trainers.pretrained_weights import unwrapped
from nnunetv2_dropgen.trainers.sibling_folds import mixed_weights_warning
from nnunetv2_dropgen.weights import env_var_for, other_weights_variables


class TrainerConflict(RuntimeError):
    """A base trainer that does something DropGen cannot combine with; the message names what."""


def first_layer_input_channels(network: nn.Module) -> int | None:
    """The input channels of the first convolution or linear layer of `network` (None if it has none)."""
    for module in network.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return module.in_channels
        if isinstance(module, nn.Linear):
            return module.in_features
    return None


class DropGen:
    """Mix into an nnU-Net trainer, first: frozen-extractor features + channel dropout over image and features."""

    extractor_name: str = "anatomix"
    dropout_p: float = 0.75
    use_image: bool = True
    extractor_options: tuple[str, ...] = ()
    """The DropGen authors' behaviours to follow (nnunetv2_dropgen.network.options)."""
    to_predict_elsewhere: str = (
        "This model was trained with nnunetv2-dropgen; nnU-Net finds its trainer only where that package is "
        f"installed: pip install 'nnunetv2-dropgen>={__version__}' and export nnUNet_extTrainer=$(nnunetv2_dropgen "
        "trainer-dir) before nnUNetv2_predict."
    )
    """nnU-Net writes every trainer attribute into each fold's debug.json, which nnUNetv2_export_model_to_zip
    carries: whoever receives the model reads there what it needs."""

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ) -> None:
        # refuse 2D and unknown extractors before nnU-Net creates folders or touches data
        require_3d(PlansManager(plans).get_configuration(configuration), configuration)
        get_extractor_spec(self.extractor_name)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._extractor_weights_from_checkpoint = False

    @classmethod
    def build_network_architecture(
        cls,
        plans_manager: PlansManager,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        """The base trainer's network, built for the image, feature and extra channels, wrapped in a DropGenNetwork.

        The base's own `build_network_architecture` builds the backbone (nnU-Net's from the plans, or a user's
        architecture), asked for the widened input; a base that ignores the channel count it is given is refused.
        """
        require_3d(configuration_manager)
        ct = [i for i, scheme in enumerate(configuration_manager.normalization_schemes) if scheme == CT_NORMALIZATION]
        if ct:
            warnings.warn(
                f"this DropGen model (plans {plans_manager.plans_name}) normalizes image channel(s) "
                f"{', '.join(map(str, ct))} with its training set's CT statistics (nnU-Net's CTNormalization): CT "
                "images are predicted as it was trained, but an image of another modality (MR) is saturated before "
                "DropGen's extractor sees it. For other modalities, train with per-image normalization plans "
                "(nnunetv2_dropgen plans --per-image-normalization; README: 'Train on CT, segment MR').",
                CTStatisticsWarning,
                stacklevel=2,
            )
        layout = channel_layout(configuration_manager, num_input_channels)
        spec = get_extractor_spec(cls.extractor_name)
        widened = DropGenNetwork.backbone_input_channels(
            layout.num_image_channels, spec.feature_channels, layout.num_extra_channels
        )
        backbone = super().build_network_architecture(
            plans_manager, configuration_manager, widened, num_output_channels, enable_deep_supervision
        )
        taken = first_layer_input_channels(backbone)
        if taken is not None and taken != widened:
            raise TrainerConflict(
                f"{cls.__name__}: the base trainer's build_network_architecture made a network whose first layer "
                f"takes {taken} input channels although it was asked for {widened} ({layout.num_image_channels} "
                f"image + {layout.num_image_channels * spec.feature_channels} feature + {layout.num_extra_channels} "
                "extra); DropGen needs a base that builds its network for the channel count it is given."
            )
        return build_dropgen_network(
            cls.extractor_name,
            backbone,
            num_image_channels=layout.num_image_channels,
            p=cls.dropout_p,
            num_extra_channels=layout.num_extra_channels,
            use_image=cls.use_image,
            options=cls.extractor_options,
        )

    def initialize(self) -> None:
        if not self.was_initialized and self.preprocessed_dataset_folder is not None:
            # before nnU-Net builds anything and then fails on the missing folder with a bare file error
            missing = missing_preprocessed_data_error(
                Path(self.preprocessed_dataset_folder), self.plans_manager, self.configuration_name
            )
            if missing:
                raise FileNotFoundError(missing)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CTStatisticsWarning)  # the training log says it, with the commands
            super().initialize()

    @property
    def dropgen_network(self) -> DropGenNetwork:
        """The DropGenNetwork inside whatever DDP / torch.compile wrappers nnU-Net put around it."""
        return unwrapped(self.network)

    def configure_optimizers(self, *args: Any, **kwargs: Any) -> tuple[torch.optim.Optimizer, object]:
        """The base's optimizer and schedule, with the frozen extractor taken out of every parameter group.

        Arguments go to the base's (nnUNetTrainer_warmup's takes a stage)."""
        optimizer, scheduler = super().configure_optimizers(*args, **kwargs)
        extractor = self.dropgen_network.extractor
        if any(p.requires_grad for p in extractor.parameters()):
            raise TrainerConflict(
                f"{self.__class__.__name__}: the base trainer's configure_optimizers made the frozen extractor "
                "trainable; DropGen's extractor must never be optimized."
            )
        frozen = {id(p) for p in extractor.parameters()}
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in frozen]
        return optimizer, scheduler

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self.dropgen_network.extractor.training:
            raise TrainerConflict(
                f"{self.__class__.__name__}: the base trainer put DropGen's extractor in training mode, which would "
                "move its BatchNorm statistics; the extractor must stay in eval mode."
            )

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        super().load_checkpoint(filename_or_checkpoint)  # the feature record inside refuses another pipeline
        self._extractor_weights_from_checkpoint = True

    def on_train_start(self) -> None:
        if not self.was_initialized:
            self.initialize()
        network = self.dropgen_network
        conflict = ineffective_option(network)
        if conflict and not self._extractor_weights_from_checkpoint:  # a model begun so still continues (--c)
            raise TrainerConflict(f"{self.__class__.__name__}: {conflict}")
        if network.pretrained_from is not None and not self._extractor_weights_from_checkpoint:
            self._keep_or_replace_pretrained_extractor(network)
        elif not self._extractor_weights_from_checkpoint:
            load_extractor_weights(network)
        self._log_dropgen_settings(network)
        if network.spec.superseded_by and not self._extractor_weights_from_checkpoint:
            self.print_to_log_file(
                f"DropGen: NOTE: extractor {network.spec.name} is superseded by {network.spec.superseded_by}, kept so "
                f"that models trained with it predict as before; for a new model name {network.spec.superseded_by} "
                "in the trainer name instead."
            )
        self._warn_if_other_folds_differ(network)
        if not self._extractor_weights_from_checkpoint:
            self._warn(unread_weights_variables_warning(network))
        super().on_train_start()

    def on_train_end(self) -> None:
        """Folds started side by side (one per GPU) had no sibling checkpoint to compare with at their start."""
        super().on_train_end()
        self._warn_if_other_folds_differ(self.dropgen_network)

    def _warn_if_other_folds_differ(self, network: DropGenNetwork) -> None:
        """Other folds of this model that started from other extractor weights are named (see sibling_folds)."""
        self._warn(mixed_weights_warning(Path(self.output_folder), network.record, env_var_for(network.spec.name)))

    def _warn(self, sentence: str | None) -> None:
        """Put `sentence` in the training log and raise it as a Python warning (None: nothing to say)."""
        if sentence:
            self.print_to_log_file(f"DropGen: WARNING: {sentence}")
            warnings.warn(sentence, stacklevel=3)

    def _keep_or_replace_pretrained_extractor(self, network: DropGenNetwork) -> None:
        """Fine-tuning (-pretrained_weights): the backbone learned from that checkpoint's extractor, so keep it,
        unless DROPGEN_WEIGHTS_<NAME> explicitly asks for other weights; then say that the features changed."""
        pretrained = network.record
        variable = env_var_for(network.spec.name)
        if not os.environ.get(variable):
            self.print_to_log_file(
                f"DropGen: extractor weights kept from the -pretrained_weights checkpoint {network.pretrained_from} "
                f"(sha256 {pretrained.weights_sha256}); set {variable} to replace them"
            )
            return
        load_extractor_weights(network)
        if network.record.weights_sha256 != pretrained.weights_sha256:
            note = (
                f"the backbone of {network.pretrained_from} was trained on the features of other extractor weights "
                f"(sha256 {pretrained.weights_sha256}); {variable} now gives sha256 {network.record.weights_sha256}, "
                "so fine-tuning starts from features the backbone has not seen"
            )
            self.print_to_log_file(f"DropGen: NOTE: {note}")
            warnings.warn(note, stacklevel=2)

    def _log_dropgen_settings(self, network: DropGenNetwork) -> None:
        n_img, n_feat = network.num_image_channels, network.num_image_channels * network.feature_channels
        n_extra = network.num_extra_channels
        dropped = "image and feature channels" if network.use_image else "feature channels (images always zeroed)"
        record, spec = network.record, network.spec
        source = " from the checkpoint; at the start of training" if self._extractor_weights_from_checkpoint else ""
        lines = [
            f"DropGen: trainer {self.__class__.__name__}, extractor {spec.name} ({spec.feature_channels} features "
            f"per image channel, spatial multiple {spec.spatial_multiple}, input {record.preprocessing}, output "
            f"{record.normalization})",
            f"DropGen: extractor weights{source}: {record.weights_origin}",
            f"DropGen: channel dropout p={network.p} on {dropped}, training only",
            f"DropGen: options: {', '.join(network.options) or 'none (this package defaults)'}",
            f"DropGen: backbone input = {n_img} image + {n_feat} feature + {n_extra} extra (cascade) channels "
            f"= {n_img + n_feat + n_extra}",
        ]
        for line in lines:
            self.print_to_log_file(line)
        self._warn(ct_normalization_warning(self.plans_manager, self.configuration_name, type(self).__name__))


def ct_normalization_warning(plans_manager: PlansManager, configuration: str, trainer_name: str) -> str | None:
    """A sentence when the plans normalize an image channel with the training set's CT statistics, else None.

    nnU-Net's CTNormalization clips every image, test images of any modality included, to the training set's
    foreground percentiles and z-scores it with the training set's statistics: right for CT test images, but
    it saturates an MR image before the extractor sees it. Per-image normalization plans fix that.
    """
    plans = plans_manager.plans
    channels = ct_channels(plans, configuration)
    if not channels:
        return None
    dataset_id = convert_dataset_name_to_id(plans_manager.dataset_name)
    name = f"{plans_manager.plans_name}PerImageNorm"
    needed = configurations_to_preprocess(plans, configuration)
    previous = needed[1:]  # needed[0] is the configuration's own data
    first = (
        f"; train {' and '.join(previous)} with -p {name} first, every fold, with a schedule that runs the final "
        "validation (the cascade trains on its predictions)"
        if previous
        else ""
    )
    return (
        f"image channel(s) {', '.join(map(str, channels))} use nnU-Net's CTNormalization, which clips and scales every "
        "image with this training set's CT statistics: CT test images are fine, but an image of another modality "
        "(MR) is saturated before DropGen's extractor sees it. To segment other modalities, derive per-image "
        f"normalization plans and train with them: nnunetv2_dropgen plans -d {dataset_id} --per-image-normalization "
        f"-p {plans_manager.plans_name}; nnUNetv2_preprocess -d {dataset_id} -plans_name {name} -c {' '.join(needed)}"
        f"{first}; nnUNetv2_train {dataset_id} {configuration} FOLD -tr {trainer_name} -p {name}."
    )


def missing_preprocessed_data_error(folder: Path, plans_manager: PlansManager, configuration: str) -> str | None:
    """A sentence naming the nnUNetv2_preprocess command when `folder` holds no preprocessed case, else None.

    Plans derived with `nnunetv2_dropgen plans --per-image-normalization` get a data identifier of their own, so
    training with them before preprocessing otherwise stops in nnU-Net's dataset loader with a bare file error.
    """
    if holds_preprocessed_data(folder):
        return None
    dataset_id = convert_dataset_name_to_id(plans_manager.dataset_name)
    return (
        f"there are no preprocessed data for plans {plans_manager.plans_name!r}, configuration {configuration!r} "
        f"(nnU-Net reads them from {folder}); preprocess them first: nnUNetv2_preprocess -d {dataset_id} "
        f"-plans_name {plans_manager.plans_name} -c {preprocessed_as(plans_manager.plans, configuration)}"
    )


def unread_weights_variables_warning(network: DropGenNetwork) -> str | None:
    """A sentence when DROPGEN_WEIGHTS_* variables are set but not this extractor's own: a file meant for this
    model (`DROPGEN_WEIGHTS_MINIMIX` with a minimix2 trainer, a misspelt name) would otherwise go unused without
    a word."""
    own = env_var_for(network.spec.name)
    others = other_weights_variables(network.spec.name)
    if os.environ.get(own) or not others:
        return None
    return (
        f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} set, but this trainer's extractor "
        f"{network.spec.name} reads only {own}, which is not: its weights are {network.record.weights_origin}. If "
        f"the file was meant for this model, set {own} instead, or train with the extractor it belongs to."
    )


def ineffective_option(network: DropGenNetwork) -> str | None:
    """A sentence when an option in the trainer's name would change nothing (bnBatch on an extractor without
    BatchNorm, such as anatomix-dev): a new training is refused, since its name would promise a behaviour it
    lacks. Models trained so before keep predicting (they are the default model)."""
    if "bnBatch" in network.options and not network.batch_statistics_layers:
        return (
            f"option bnBatch makes the extractor's BatchNorm layers use batch statistics, but extractor "
            f"{network.spec.name!r} has no BatchNorm layer, so the option would change nothing: train without bnBatch."
        )
    return None
