"""The prefix cache (issue #16, item 4): a cached run's losses and weights equal an uncached run's whose frozen prefix is in
eval mode, for head-only, freeze-bottom 50% and LIFT over the top half; stored states are read from the second epoch on;
the cache refills when the boundary moves down, stays empty where nothing below can be skipped; `lift-nb train --cache_prefix`."""
import json

import pytest
import torch

from lift_nb.blocks import tiny_model
from lift_nb.schedule import make_schedule
from lift_nb.train import LayerwiseTrainer, TrainArgs


def _examples(n=16, seed=0, cls=True):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        x = torch.randint(4, 120, (int(torch.randint(4, 12, (1,), generator=g)),), generator=g)  # lengths differ: padding
        out.append(dict(input_ids=x.tolist(), labels=int(x[0]) % 2) if cls else dict(input_ids=x.tolist()))
    return out


def _run(model_fn, method, cls=True, steps=12, **kw):
    torch.manual_seed(0)
    model = model_fn()
    t = LayerwiseTrainer(model, method, _examples(cls=cls), TrainArgs(max_steps=steps, batch_size=4, learning_rate=1e-2, progress=False, cpu=True, **kw))
    try: m = t.fit()
    finally: t.close()
    return [h['loss'] for h in t.history if 'memory' in h], {k: v.detach().clone() for k, v in model.state_dict().items()}, m, t


def _bert(): return tiny_model('bert', 'classification', n_layers=4, hidden=32, heads=4, vocab=128, positions=32)
def _llama(): return tiny_model('llama', 'causal-lm', n_layers=4, hidden=32, heads=4, vocab=128, positions=32)

CASES = {
    'head': (_bert, lambda: make_schedule('head'), True),
    'freeze-bottom 50%': (_bert, lambda: make_schedule('freeze-bottom', p=50), True),
    'lift top half': (_bert, lambda: make_schedule('lift', range=(3, 4), schedule='front2end', policy='grouped', lr_scale=1.0), True),
    'llama freeze-bottom 50%': (_llama, lambda: make_schedule('freeze-bottom', p=50), False),
}


@pytest.mark.parametrize('case', list(CASES))
def test_cached_run_equals_uncached_with_the_prefix_in_eval_mode(case):
    mk, sched, cls = CASES[case]
    ref_loss, ref_w, _, _ = _run(mk, sched(), cls, prefix_eval=True)
    loss, w, m, t = _run(mk, sched(), cls, cache_prefix=True)
    assert loss == pytest.approx(ref_loss, rel=1e-5, abs=1e-6)
    for k in ref_w: torch.testing.assert_close(w[k], ref_w[k], rtol=1e-4, atol=1e-4)  # float rounding of the padded rows, through 12 Adam steps
    st = m['prefix_cache']
    assert st['hits'] == 8 and st['misses'] == 4 and st['examples'] == 16  # 3 epochs of 4 batches: the last 2 from the store
    assert t.history[-1]['memory']['prefix_cache'] == st['bytes'] > 0  # the memory accounting counts it


def test_the_cache_changes_nothing_but_dropout_in_the_prefix():
    "Against a plain run (dropout in the prefix) the losses differ: the cache's reference is the eval-mode prefix."
    plain, _, _, _ = _run(_bert, make_schedule('freeze-bottom', p=50))
    cached, _, _, _ = _run(_bert, make_schedule('freeze-bottom', p=50), cache_prefix=True)
    assert plain[0] != pytest.approx(cached[0], rel=1e-6)


def test_lift_moving_down_refills_and_full_fine_tuning_caches_nothing():
    _, _, m, _ = _run(_bert, make_schedule('lift', schedule='end2front', policy='grouped'), cache_prefix=True)
    assert m['prefix_cache']['refills'] >= 2  # every move down empties the store
    _, _, m, _ = _run(_bert, 'full', cache_prefix=True)
    assert m['prefix_cache']['hits'] == 0 and m['prefix_cache']['examples'] == 0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="cache_prefix_dtype must be 'fp32' or 'bf16'"): TrainArgs(cache_prefix_dtype='int8')
    with pytest.raises(ValueError, match='cache_prefix_mib must be a positive'): TrainArgs(cache_prefix_mib=0)
    with pytest.raises(ValueError, match='a list of examples'):
        LayerwiseTrainer(_bert(), 'head', lambda m: None, TrainArgs(cache_prefix=True, progress=False))


# -- the frozen prefix in int8 (issue #16, item 5) ----------------------------------------------------------------------

def test_int8_prefix_changes_nothing_where_there_is_no_prefix():
    "Full fine-tuning has no frozen prefix: with prefix_int8 its run is the fp32 run, bit for bit, and no copy is made."
    ref, ref_w, _, _ = _run(_bert, 'full')
    loss, w, m, _ = _run(_bert, 'full', prefix_int8=True)
    assert loss == ref and all(torch.equal(w[k], ref_w[k]) for k in ref_w)
    assert m['prefix_int8'] == dict(copies_made=0, forwards=0, layers=0)


@pytest.mark.parametrize('case', ['freeze-bottom 50%', 'lift top half', 'llama freeze-bottom 50%'])
def test_int8_prefix_trains_close_to_fp32(case):
    """The prefix's linear layers in int8: the first loss is the fp32 one up to the quantization error (the runs then drift apart, as
    any change of arithmetic makes them at this learning rate), not exactly; the copies are made once per layer while nothing below changes."""
    mk, sched, cls = CASES[case]
    ref, _, _, _ = _run(mk, sched(), cls)
    loss, w, m, t = _run(mk, sched(), cls, prefix_int8=True)
    assert loss != ref and loss[0] == pytest.approx(ref[0], rel=0.03)
    made = {'freeze-bottom 50%': 2 * 6, 'lift top half': 3 * 6, 'llama freeze-bottom 50%': 2 * 7}[case]  # BERT's blocks have 6 linear layers, LLaMA's 7
    assert m['prefix_int8']['forwards'] == 12 and m['prefix_int8']['copies_made'] == made  # once each (LIFT: block 3 again after it trained)
    assert m['frozen_dtype'] == 'fp32'


def test_int8_copies_follow_lift_down_and_up_again():
    "LIFT end to front, two passes over 4 blocks: a block that trained gets new int8 copies when it is below the boundary again."
    _, _, m, _ = _run(_bert, make_schedule('lift', schedule='end2front', policy='cyclic', passes=2), steps=16, prefix_int8=True)
    assert m['prefix_int8'] == dict(copies_made=2 * 3 * 6, forwards=12, layers=0)  # blocks 0-2 copied in each pass; no prefix at block 0


def test_int8_prefix_settings_refused():
    with pytest.raises(ValueError, match="prefix_int8 quantizes fp32 frozen units: drop frozen_dtype='bf16'"): TrainArgs(prefix_int8=True, frozen_dtype='bf16')
    assert TrainArgs(prefix_int8=True).frozen_dtype == 'fp32'  # 'auto' means fp32 with it


def _lift_nb_train(tmp_path, *flags)->dict:
    "`lift-nb train` on a tiny BERT and a 24-line CSV, 4 steps; returns its metrics.json."
    from lift_nb.cli import main
    from lift_nb.data import word_tokenizer
    words = 'good great fine bad awful poor the film was a very plot'.split()
    word_tokenizer(words).save_pretrained(tmp_path / 'm'); tiny_model('bert', 'classification', n_layers=2, vocab=32).save_pretrained(tmp_path / 'm')
    (tmp_path / 'train.csv').write_text('text,label\n' + ''.join(f"the film was {w},{int(w in words[:3])}\n" for w in words[:6] * 4))
    assert main(['train', '--model_name_or_path', str(tmp_path / 'm'), '--train_file', str(tmp_path / 'train.csv'), '--label_column', 'label',
                 '--max_steps', '4', '--per_device_train_batch_size', '4', '--output_dir', str(tmp_path / 'out'), '--no_progress', *flags]) == 0
    return json.loads((tmp_path / 'out' / 'metrics.json').read_text())


def test_lift_nb_train_prefix_int8(tmp_path):
    "`lift-nb train --prefix_int8` records what it did in metrics.json."
    m = _lift_nb_train(tmp_path, '--method', 'freeze-bottom', '--prefix_int8')
    assert m['prefix_int8']['copies_made'] == 6 and m['frozen_dtype'] == 'fp32'


def _dropout_modes(model):
    "Record, per forward of every dropout module, its unit's name and whether it ran in train mode."
    from lift_nb.blocks import find_units
    seen = []
    for u in find_units(model):
        for _, mod in u.modules:
            for d in mod.modules():
                if isinstance(d, torch.nn.Dropout): d.register_forward_pre_hook(lambda m, a, name=u.name: seen.append((name, m.training)))
    return seen


@pytest.mark.parametrize('flag, in_eval', [('prefix_eval', {'embeddings', 'block.0', 'block.1'}),
                                          ('frozen_eval', {'embeddings', 'block.0', 'block.1', 'block.3'})])
def test_frozen_units_in_eval_mode_only_where_nothing_trains(flag, in_eval):
    "LIFT on block.2 (of 4): `prefix_eval` turns dropout off below it, `frozen_eval` in every frozen unit; the units that train keep it."
    torch.manual_seed(0)
    model = _bert()
    seen = _dropout_modes(model)
    t = LayerwiseTrainer(model, make_schedule('lift', range=(3, 3)), _examples(), TrainArgs(max_steps=2, batch_size=4, progress=False, cpu=True, **{flag: True}))
    try: m = t.fit()
    finally: t.close()
    assert {n for n, train in seen if not train} == in_eval
    assert {n for n, train in seen if train} == {'embeddings', 'block.0', 'block.1', 'block.2', 'block.3'} - in_eval  # (BERT's classifier dropout sits outside the units)
    assert m['dropout_off'] == ('frozen units' if flag == 'frozen_eval' else 'frozen prefix')
    assert all(mod.training for mod in model.modules())  # modes restored after every step


def test_frozen_eval_changes_nothing_where_everything_trains():
    "Full fine-tuning has no frozen unit: `frozen_eval` leaves its losses bit for bit."
    plain, _, m, _ = _run(_bert, make_schedule('full'), steps=4)
    same, _, m2, _ = _run(_bert, make_schedule('full'), steps=4, frozen_eval=True)
    assert plain == same and m['dropout_off'] is None and m2['dropout_off'] == 'frozen units'


@pytest.mark.parametrize('flag, said', [('--frozen_eval', 'frozen units'), ('--prefix_eval', 'frozen prefix')])
def test_lift_nb_train_eval_mode_flags(tmp_path, flag, said):
    "`lift-nb train --frozen_eval` / `--prefix_eval` reach the trainer; `metrics.json` says which units ran in eval mode."
    assert _lift_nb_train(tmp_path, '--method', 'lift', flag)['dropout_off'] == said
