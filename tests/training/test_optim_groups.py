"""Weight-decay groups: tokens and position tables never decay, whatever the backbone calls them."""

import pytest
from conftest import tiny_dino_config, tiny_selfpatch_config

from ssl_hf import DINOForPreTraining, SelfPatchForPreTraining
from ssl_hf.training.optim import param_groups


@pytest.mark.parametrize(
    ("build", "table"),
    [
        (lambda: DINOForPreTraining(tiny_dino_config()), "backbone.embeddings.position_embeddings"),
        (lambda: SelfPatchForPreTraining(tiny_selfpatch_config()), "backbone.embeddings.position_embedding.weight"),
    ],
)
def test_position_tables_and_tokens_get_no_weight_decay(build, table):
    model = build()
    decay, no_decay = param_groups(model, 0.04)
    assert decay["weight_decay"] == 0.04
    assert no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert table in undecayed
    if hasattr(model, "aggregation"):
        assert "aggregation.cls_token" in undecayed
    decayed = {names[id(p)] for p in decay["params"]}
    assert all(p.ndim >= 2 for n, p in model.named_parameters() if n in decayed)
    assert not any("position_embedding" in n or "cls_token" in n for n in decayed)
