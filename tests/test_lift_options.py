"LIFT's learning-rate options (lr_scale, layer_decay) and train_norms: per-unit rates, equivalences, truncation kept, exact resume."
import pytest
import torch

from lift_nb.blocks import find_units, tiny_model
from lift_nb.checker import trace_backward
from lift_nb.freeze import FreezeEngine
from lift_nb.schedule import make_schedule
from lift_nb.train import LayerwiseTrainer, TrainArgs


def _examples(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randint(3, 128, (n, 10), generator=g)
    return [dict(input_ids=x.tolist(), labels=int(x[0]) % 2) for x in xs]


def _train(steps=8, lr=1e-2, seed=0, **opts):
    torch.manual_seed(0)
    model = tiny_model('bert', 'classification', n_layers=4)
    t = LayerwiseTrainer(model, make_schedule('lift', **opts), _examples(), TrainArgs(max_steps=steps, batch_size=8, learning_rate=lr,
                                                                                    decay='constant', seed=seed, progress=False))
    t.fit(); t.close()
    return t, model


def test_lr_scale_equals_a_larger_learning_rate():
    "lr_scale=2 at lr x trains exactly as lr 2x (AdamW without weight decay): the scale reaches every trained parameter."
    _, a = _train(lr=1e-2, lr_scale=2.0)
    _, b = _train(lr=2e-2, lr_scale=1.0)
    _, c = _train(lr=1e-2, lr_scale=1.0)
    for (n, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q), n
    assert any(not torch.equal(p, r) for p, r in zip(a.parameters(), c.parameters()))


def test_the_default_scales_the_rate_by_three():
    "lift's default lr_scale is 3 (the GLUE study): lr x trains as lr 3x at lr_scale=1, up to the rounding of 3x."
    t, a = _train(lr=1e-2)
    _, b = _train(lr=3e-2, lr_scale=1.0)
    assert t.schedule.options['lr_scale'] == 3.0 and t.history[0]['lr'] == pytest.approx(3e-2)  # the log shows the rate used
    for (n, p), q in zip(a.named_parameters(), b.parameters()): torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)
    assert make_schedule('lift-paper').options['lr_scale'] == 1.0  # the paper's setting trains at the rate given


def test_layer_decay_sets_each_blocks_rate():
    t, _ = _train(steps=4, policy='grouped', schedule='front2end', layer_decay=0.5, lr_scale=1.0)  # one step per block, bottom to top
    groups = {g['unit']: g['lr'] for g in t.raw_optimizer.param_groups}
    assert groups['block.3'] == pytest.approx(1e-2) and groups['head'] == pytest.approx(1e-2)
    assert [t.lr_at(0, f'block.{k}') for k in range(4)] == pytest.approx([1e-2 * 0.5 ** (3 - k) for k in range(4)])
    assert t.history[0]['lr'] == pytest.approx(1e-2)  # the log shows the method's overall rate


def test_train_norms_keeps_the_truncation_and_trains_the_norms_above():
    sched = make_schedule('lift', schedule='front2end', policy='grouped', train_norms=True)
    model = tiny_model('bert', 'classification', n_layers=4)
    units = find_units(model); sched.setup(units, 4)
    sel = sched.trainable(1)  # block 1 (0-based) active
    batch = dict(input_ids=torch.randint(3, 128, (2, 8), generator=torch.Generator().manual_seed(0)), labels=torch.tensor([0, 1]))
    with FreezeEngine(model, units) as eng:
        eng.activate(list(sel.units), sel.params)
        names = {n for n, p in model.named_parameters() if p.requires_grad}
        tr = trace_backward(model, batch, units, active=eng.active)
    assert tr.lowest_reached.name == 'block.1'  # nothing below the active block is reached
    assert {n for n in names if '.layer.3.' in n} == {f'bert.encoder.layer.3.{m}.LayerNorm.{w}' for m in ('attention.output', 'output')
                                                        for w in ('weight', 'bias')}
    assert not any('.layer.0.' in n for n in names) and any('.layer.1.attention.self.query' in n for n in names)


def test_options_are_checked():
    for k in ('lr_scale', 'layer_decay'):
        with pytest.raises(ValueError, match=f'{k} must be a positive number'): make_schedule('lift', **{k: 0})


def test_resume_is_exact_with_the_new_options(tmp_path):
    "Per-unit param groups survive a checkpoint: 4 + 4 resumed steps equal 8 in one go."
    opts = dict(layer_decay=0.7, lr_scale=1.5, train_norms=True, state_policy='keep')
    def trainer(out):
        torch.manual_seed(0)
        m = tiny_model('bert', 'classification', n_layers=4)
        return LayerwiseTrainer(m, make_schedule('lift', **opts), _examples(),
                                TrainArgs(max_steps=8, batch_size=8, learning_rate=1e-2, output_dir=str(out), progress=False)), m
    t, whole = trainer(tmp_path / 'a'); t.fit(); t.close()
    t, _ = trainer(tmp_path / 'b'); t.fit(stop_after=4); path = t.save(); t.close()
    t, resumed = trainer(tmp_path / 'b'); t.fit(resume_from=path); t.close()
    for (n, p), q in zip(whole.named_parameters(), resumed.parameters()): assert torch.equal(p, q), n


def test_the_default_range_trains_a_classifiers_middle_third_and_says_so():
    "A 6-block classifier: blocks 3-4 (1-based) move, the others and the embeddings keep still, metrics record (3, 4); a 6-block LM trains all."
    torch.manual_seed(0)
    model = tiny_model('bert', 'classification', n_layers=6)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    t = LayerwiseTrainer(model, 'lift', _examples(), TrainArgs(max_steps=8, batch_size=8, learning_rate=1e-2, progress=False))
    m = t.fit(); t.close()
    moved = sorted({int(n.split('.')[3]) + 1 for n, p in model.named_parameters() if '.layer.' in n and not torch.equal(p, before[n])})
    assert moved == [3, 4] and m['method_options']['range'] == (3, 4)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if 'embeddings' in n)
    lm = LayerwiseTrainer(tiny_model('gpt2', n_layers=6), 'lift', [dict(input_ids=e['input_ids']) for e in _examples()],
                          TrainArgs(max_steps=12, batch_size=8, progress=False))
    assert lm.fit()['method_options']['range'] == (1, 6); lm.close()
    assert make_schedule('lift', range='all').setup(find_units(tiny_model('bert', 'classification', n_layers=6)), 8).block_range() == (1, 6)
