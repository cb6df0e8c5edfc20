"""The embedded extractors, so DropGen runs with no download (air-gapped machines, CI, the demo).

Both have anatomix's layout with 8 base filters instead of 16 (about 1.5M parameters instead of 5.9M), 16 feature
channels, the same input preprocessing and output normalization, and ship inside the package, checked by sha256
every time they load. The command, seed, time, data and stability metrics of each file are in
benchmarks/RESULTS.md and in the JSON record beside it.

minimix2 (the default embedded extractor): pretrained the way anatomix is (crowded wrap-around label maps,
physical sizes, two appearance stages with MR artefacts, anatomix's six taps) on shape families the synthetic
benchmark never segments (noise blobs, tubes, sheets, fragments), and chosen by its stability on shapes of the
benchmark's kinds, which it never saw.

minimix: the first embedded extractor (700 steps on the package's earlier synthetic label maps, which held the
benchmark's structure kinds). Superseded by minimix2 and kept so that every model trained with
`DropGenTrainer_minimix...` rebuilds and predicts exactly as before: a checkpoint carries its extractor's
weights, and the name keeps meaning the same architecture and pipeline.
"""

from __future__ import annotations

from nnunetv2_dropgen.feature_extractors.anatomix import AnatomixConfig, anatomix_spec
from nnunetv2_dropgen.feature_extractors.registry import register_extractor
from nnunetv2_dropgen.weights.sources import EmbeddedWeights

MINIMIX = AnatomixConfig(output_nc=16, num_downs=4, ngf=8)
MINIMIX_WEIGHTS = EmbeddedWeights(
    name="minimix",
    package="nnunetv2_dropgen.feature_extractors",
    filename="minimix.pth",
    sha256="ab683301365e8f663b61a6b04ec207b43e97d447dc0b0f714ec724eaf352ed2e",
)
MINIMIX2_WEIGHTS = EmbeddedWeights(
    name="minimix2",
    package="nnunetv2_dropgen.feature_extractors",
    filename="minimix2.pth",
    sha256="b4ac1d051bba74ff2a05a5e288cd74b4b7d71a5e5c58aa7df7c8d40ca73b294f",
)
EMBEDDED_DEFAULT = "minimix2"
"""The extractor the demo and the benchmark use when anatomix cannot be had."""

register_extractor(anatomix_spec("minimix", MINIMIX, MINIMIX_WEIGHTS, superseded_by="minimix2"))
register_extractor(anatomix_spec("minimix2", MINIMIX, MINIMIX2_WEIGHTS))
