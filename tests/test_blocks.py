"Block discovery on every supported architecture, the generic fallback and the errors."
import pytest
import torch
from torch import nn

from lift_nb.blocks import ARCHS, ArchSpec, find_units, register_arch, tiny_model


CASES = [(mt, task) for mt in sorted(ARCHS) for task in ARCHS[mt].tasks]  # DistilBERT, DeBERTa, ModernBERT: no causal LM


@pytest.mark.parametrize('model_type,task', CASES)
def test_units_cover_the_model_in_order(model_type, task):
    model = tiny_model(model_type, task, n_layers=5)
    units = find_units(model)
    assert units.source == f'registry:{model_type}'
    assert units.n_blocks == 5
    assert units.names[0] == 'embeddings' and units.names[-1] == 'head'
    assert [u.name for u in units.blocks] == [f'block.{i}' for i in range(5)]
    assert [u.index for u in units] == list(range(len(units)))
    assert {id(p) for p in model.parameters()} == {id(p) for u in units for p in u.parameters()}
    # blocks are disjoint and each is the i-th element of the model's own block list
    blocks = model.base_model.get_submodule(ARCHS[model_type].blocks)
    for i, u in enumerate(units.blocks): assert u.modules[0][1] is blocks[i]
    # the parts of a block cover exactly that block
    parts = units.parts(0)
    assert {id(p) for m in parts.values() for p in m.parameters()} == {id(p) for p in units.block(0).parameters()}


def test_tiny_model_runs_for_every_architecture():
    for mt in ARCHS:
        m = tiny_model(mt, 'classification', n_layers=2)
        out = m(input_ids=torch.randint(3, 128, (2, 7)))
        assert out.logits.shape == (2, 2)


def test_generic_fallback_on_an_unregistered_hf_model():
    model = tiny_model('gpt2', n_layers=3)
    model.config.model_type = 'my-unregistered-gpt'
    units = find_units(model)
    assert units.source == 'generic'
    assert units.names == ['embeddings', 'block.0', 'block.1', 'block.2', 'final_norm', 'head']


def test_register_arch_and_errors():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Linear(4, 4)
            self.stack = nn.ModuleDict({'a': nn.Linear(4, 4), 'b': nn.Linear(4, 4)})
    with pytest.raises(ValueError, match=r"no nn.ModuleList.*register_arch\("): find_units(Odd())
    with pytest.raises(ValueError, match='already registered'): register_arch('gpt2', 'h')
    model = tiny_model('llama', n_layers=2)
    old = ARCHS['llama']
    try:
        register_arch('llama', 'decoder.layers', ('embed_tokens',), overwrite=True)
        with pytest.raises(ValueError, match=r"blocks are at 'decoder.layers'.*register_arch\('llama'"): find_units(model)
        register_arch('llama', 'layers', ('embed_tok',), overwrite=True)
        with pytest.raises(ValueError, match="names embeddings 'embed_tok'"): find_units(model)
    finally:
        ARCHS['llama'] = old
    units = find_units(model)
    with pytest.raises(IndexError, match=r'0\.\.1'): units.block(2)
    with pytest.raises(KeyError, match='No unit named'): units['encoder']


def test_parameters_on_the_blocks_parent_are_refused():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))
            self.layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    with pytest.raises(ValueError, match=r"Parameters \['scale'\] sit directly on"): find_units(Net())


def test_two_equal_stacks_are_refused_and_a_spec_settles_it():
    from lift_nb.blocks import ArchSpec

    class EncDec(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.encoder = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
            self.decoder = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
    with pytest.raises(ValueError, match=r"\['encoder', 'decoder'\] are equally long"): find_units(EncDec())
    assert find_units(EncDec(), spec=ArchSpec('decoder', ('emb',))).names[:2] == ['embeddings', 'block.0']


def test_block_index_accepts_numpy_and_tensor_ints():
    import numpy as np
    units = find_units(tiny_model('gpt2', n_layers=3))
    assert units[np.int64(1)] is units.block(1) and units[torch.tensor(2)] is units.block(2)
    with pytest.raises(KeyError, match='string or a block index'): units[1.5]


def test_opt_with_projections_keeps_project_out_above_the_blocks():
    model = tiny_model('opt', n_layers=2, word_embed_proj_dim=16, do_layer_norm_before=False)
    units = find_units(model)
    assert [p for p, _ in units['final_norm'].modules] == ['model.decoder.project_out']
    assert 'model.decoder.project_in' in [p for p, _ in units['embeddings'].modules]
