"""minimix: the embedded default extractor, so DropGen runs with no download (air-gapped machines, CI, the demo).

anatomix's layout with 8 base filters instead of 16 (about 1.5M parameters instead of 5.9M), 16 feature
channels, the same input preprocessing and output normalization. Its weights were pretrained with
`nnunetv2_dropgen pretrain` on the package's synthetic label maps (command, seed, time and stability
metrics: benchmarks/RESULTS.md) and ship inside the package, checked by sha256 every time they load.
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

register_extractor(anatomix_spec("minimix", MINIMIX, MINIMIX_WEIGHTS))
