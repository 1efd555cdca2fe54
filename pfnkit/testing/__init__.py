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


def check_ffn_block(cls: type, *, d_model: int = 16, d_ffn: int = 32, **options: Any) -> None:
    """Assert that an FFN block class honours the block contract.

    Checks: the (d_model, d_ffn, **options) constructor, (..., E) -> (..., E) for 2-D and
    3-D inputs, gradients reach every parameter, the parameter counts, and that
    ``zero_init_output`` makes the block output zero.
    """
    torch.manual_seed(0)
    block = cls(d_model, d_ffn, **options)
    for shape in ((5, d_model), (2, 7, d_model)):
        x = torch.randn(*shape)
        y = block(x)
        assert y.shape == x.shape, f"{cls.__name__} mapped {x.shape} to {y.shape}"
    y = block(torch.randn(3, 4, d_model))
    (y.square().sum() + (block.aux_loss if block.aux_loss is not None else 0)).backward()
    for name, p in block.named_parameters():
        assert p.grad is not None, f"{cls.__name__}.{name} got no gradient"
    assert block.total_params == sum(p.numel() for p in block.parameters())
    assert 0 < block.active_params_per_token <= block.total_params
    block.zero_init_output()
    assert torch.allclose(block(torch.randn(3, d_model)), torch.zeros(3, d_model), atol=1e-6)
