"""Channel dropout: the augmentation that makes the segmentation network use image and features alike."""

from nnunetv2_dropgen.dropout.channel_dropout import ChannelDropout, channel_dropout, check_probability

__all__ = ["ChannelDropout", "channel_dropout", "check_probability"]
