"""Reusable contract checks: run them on your own prior or FFN block.

from pfnkit.testing import check_prior, check_ffn_block
check_prior(MyPrior())
check_ffn_block(MyBlock)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from pfnkit.priors import BatchShape, build_prior, prior_to_dict, step_generator


def check_prior(prior: Any, *, n_features: int = 3) -> None:
    """Assert that ``prior`` honours the Prior contract.

    Checks: shapes and ranges (``Batch.validate``), finite values (NaN allowed in x as
    missing values), determinism for a fixed
    generator, different data for different seeds, the requested single_eval_pos, the
    variable feature count, and that the recipe round-trips through ``prior_to_dict``.
    """
    shape = BatchShape(batch_size=4, n_rows=40, n_features=n_features, single_eval_pos=17)
    a = prior.sample(shape, generator=step_generator(0, 0)).validate()
    b = prior.sample(shape, generator=step_generator(0, 0)).validate()
    c = prior.sample(shape, generator=step_generator(0, 1)).validate()
    assert a.x.shape == (4, 40, n_features), a.x.shape
    assert a.single_eval_pos == 17
    for name in ("x", "y", "target_y"):
        t = getattr(a, name)
        assert t.dtype == torch.float32, f"{name} must be float32, got {t.dtype}"
        # x may hold NaN (missing values); nothing may be infinite, targets must be finite
        ok = ~torch.isinf(t) if name == "x" else torch.isfinite(t)
        assert ok.all(), f"{name} has {'infinite' if name == 'x' else 'non-finite'} values"
        assert torch.equal(t.nan_to_num(7.5), getattr(b, name).nan_to_num(7.5)), (
            f"{name} differs for the same generator"
        )
    assert not torch.equal(a.y, c.y), "different steps gave identical targets"
    assert (prior.task == "classification") == (a.n_classes is not None)
    if a.n_features is not None:
        for i, nf in enumerate(a.n_features.tolist()):
            assert torch.all(a.x[i, :, nf:] == 0), "features past n_features must be zero"
    assert a.x.shape[0] == 4 and not torch.isnan(a.x).all(), "x is all missing"
    if dataclasses.is_dataclass(prior):
        assert build_prior(prior_to_dict(prior)) == prior, "recipe round-trip changed the prior"


def check_ffn_block(
    block: type | str, *, d_model: int = 16, d_ffn: int = 64, **options: Any
) -> None:
    """Assert that an FFN block (a class or a registered name) honours the block contract.

    Checks: the (d_model, d_ffn, **options) constructor, (..., E) -> (..., E) for 2-D and
    3-D inputs, gradients reach every trainable parameter, determinism, the parameter
    counts, a state-dict round-trip into a block rebuilt by name, and that
    ``zero_init_output`` makes the block output zero.
    """
    from pfnkit.model.ffn import FFN_BLOCKS, build_ffn

    name = block if isinstance(block, str) else None
    cls = FFN_BLOCKS.get(block) if isinstance(block, str) else block
    torch.manual_seed(0)
    blk = build_ffn(name, d_model, d_ffn, options) if name else cls(d_model, d_ffn, **options)
    for shape in ((5, d_model), (2, 7, d_model)):
        x = torch.randn(*shape)
        y = blk(x)
        assert y.shape == x.shape, f"{cls.__name__} mapped {x.shape} to {y.shape}"
    blk.train()
    y = blk(torch.randn(4, 64, d_model))
    (y.square().sum() + (blk.aux_loss if blk.aux_loss is not None else 0)).backward()
    for pname, p in blk.named_parameters():
        if p.requires_grad and p.numel() > 0:
            assert p.grad is not None, f"{cls.__name__}.{pname} got no gradient"
    blk.eval()
    x = torch.randn(9, d_model)
    assert torch.equal(blk(x), blk(x)), f"{cls.__name__} is not deterministic in eval mode"
    assert blk.total_params == sum(p.numel() for p in blk.parameters())
    assert 0 < blk.active_params_per_token <= blk.total_params
    if name is not None:
        torch.manual_seed(1)
        twin = build_ffn(name, d_model, d_ffn, options).eval()
        twin.load_state_dict(blk.state_dict())
        assert torch.allclose(twin(x), blk(x)), f"{name}: state-dict round-trip changed outputs"
    blk.zero_init_output()
    assert torch.allclose(blk(torch.randn(3, d_model)), torch.zeros(3, d_model), atol=1e-6)
