"""torch.compile (nnU-Net's default on CUDA) traces DropGenNetwork in one graph, in training and inference.

Checked on CPU with the aot_eager backend: the tracing is the same dynamo pass a GPU run goes through.
"""

from __future__ import annotations

import torch
import torch._dynamo
from _core_helpers import ANATOMIX_FEATURES, tiny_backbone

from nnunetv2_dropgen.network import build_dropgen_network


def test_network_compiles_without_graph_breaks_and_matches_eager() -> None:
    torch.manual_seed(0)
    net = build_dropgen_network("anatomix", tiny_backbone(1 + ANATOMIX_FEATURES, deep_supervision=True))
    x = torch.randn(2, 1, 32, 32, 32)
    torch._dynamo.reset()
    for mode in (True, False):
        explanation = torch._dynamo.explain(net.train(mode))(x)
        assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(net, backend="aot_eager")
    net.train()
    compiled(x)[0].mean().backward()
    assert all(p.grad is None for p in net.extractor.parameters())
    assert any(p.grad is not None for p in net.backbone.parameters())
    net.eval()
    with torch.no_grad():
        assert torch.allclose(compiled(x)[0], net(x)[0], atol=1e-6)
