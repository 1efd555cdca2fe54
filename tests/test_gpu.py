"""CUDA paths: fused SDPA kernels, bf16 autocast and fused AdamW. Skipped without a GPU."""

import pytest
import torch

from pfnkit.model import PFNConfig, attend
from pfnkit.priors import GPPrior
from pfnkit.train import TrainConfig, Trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_sdpa_matches_math_on_cuda():
    q, k, v = (torch.randn(2, 4, n, 32, device="cuda", dtype=torch.bfloat16) for n in (64, 40, 40))
    ref = attend(q.float(), k.float(), v.float(), backend="math")
    assert torch.allclose(attend(q, k, v, backend="sdpa").float(), ref, atol=3e-2)


def test_training_on_cuda_uses_bf16_and_converges():
    cfg = PFNConfig(d_model=64, n_layers=2, n_heads=4, n_bars=100)
    tc = TrainConfig(
        steps=60,
        batch_size=16,
        rows=64,
        lr=2e-3,
        device="cuda",
        precision="auto",
        border_samples=5000,
    )
    trainer = Trainer(GPPrior(), cfg, tc)
    assert trainer.bf16 == torch.cuda.is_bf16_supported()
    losses = [trainer.train_step() for _ in range(60)]
    assert sum(losses[-10:]) < sum(losses[:10])


def test_semi24_sparse_inference_matches_masked_dense():
    from pfnkit.model.ffn import build_ffn
    from pfnkit.model.ffn.semi24 import mask_24

    block = build_ffn("semi24", 128, 256).cuda().train()
    x = torch.randn(64, 128, device="cuda")
    block(x)  # a training forward applies the 2:4 mask
    assert mask_24(block.up.weight.data).sum() * 2 == block.up.weight.numel()
    dense = block.eval()(x).half()
    sparse = block.to_sparse()(x.half())
    assert torch.allclose(sparse.float(), dense.float(), atol=5e-2, rtol=5e-2)
