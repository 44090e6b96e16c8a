"Schedules driving the engine: every scheduled block really trains, the optimizer follows, resume is exact."
import weakref

import pytest
import torch

from lift_nb.blocks import find_units, tiny_model
from lift_nb.checker import trace_backward
from lift_nb.freeze import FreezeEngine, model_loss, optimizer_state_bytes
from lift_nb.schedule import SCHEDULES, make_schedule, schedule_options, trainable_count
from lift_nb.train import run_steps

DATA = torch.randint(3, 128, (64, 12), generator=torch.Generator().manual_seed(0))


def _snapshot(model): return {n: p.detach().clone() for n, p in model.named_parameters()}


# each method with options small enough that every block it schedules gets a turn in 16 steps
CASES = [('lift', {}), ('lift', dict(policy='cyclic')), ('lift', dict(schedule='end2front')),
         ('lift', dict(schedule='random', policy='cyclic')), ('lift', dict(state_policy='keep', policy='cyclic')),
         ('badam', dict(switch_every=2)), ('badam', dict(switch_every=2, order='random')), ('lisa', dict(interval=2)),
         ('gradual', {}), ('freeze-bottom', {}), ('freeze-top', {}), ('freeze-interval', {}), ('adt-h', dict(k=3)),
         ('adt-l', dict(k=3)), ('autofreeze', dict(interval=3)), ('full', {}), ('head', {}), ('bitfit', {})]


@pytest.mark.parametrize('name,kw', CASES, ids=[f'{n}-{"-".join(map(str, k.values()))}' for n, k in CASES])
def test_every_scheduled_block_changes(name, kw):
    model = tiny_model('gpt2', n_layers=4)
    before = _snapshot(model)
    out = run_steps(model, make_schedule(name, **kw), DATA, steps=16, batch_size=4, lr=1e-2, progress=False)
    units = find_units(out['model'])
    scheduled = {u for step in out['history']['active'] for u in step if u.startswith('block.')}
    assert scheduled or name == 'head', f'{name} trained no block'
    for b in units.blocks:
        changed = any(not torch.equal(p, before[n]) for n, p in b.named_parameters())
        assert changed == (b.name in scheduled), f'{name}: {b.name} scheduled={b.name in scheduled} changed={changed}'


def test_optimizer_holds_exactly_the_active_parameters_and_releases_old_state():
    model = tiny_model('llama', n_layers=4)
    units = find_units(model)
    sched = make_schedule('lift', policy='cyclic').setup(units, 8)
    x = DATA[:4]
    refs = []
    with FreezeEngine(model, units) as eng:
        for step in range(8):
            sel = sched.trainable(step)
            eng.activate(list(sel.units))
            if eng.optimizer is None: eng.make_optimizer(torch.optim.AdamW, lr=1e-3)
            opt = eng.optimizer
            held = {id(p) for g in opt.param_groups for p in g['params']}
            assert held == {id(p) for u in units.resolve(list(sel.units)) for p in u.parameters()}
            assert all(r() is None for r in refs), 'state of a block that left is still alive'
            model_loss(model, dict(input_ids=x, labels=x)).backward()
            opt.step(); opt.zero_grad(set_to_none=True)
            blk = units.block(sel.blocks()[0])
            refs = [weakref.ref(opt.state[p]['exp_avg']) for p in blk.parameters()]
            # state: the active block and the head, nothing more
            want = sum(2 * p.numel() * p.element_size() + 4 for u in units.resolve(list(sel.units)) for p in u.parameters())
            assert optimizer_state_bytes(opt) == want


@pytest.mark.parametrize('name,kw', [('lift', dict(schedule='random')), ('lisa', dict(interval=3)),
                                      ('badam', dict(switch_every=2, order='random')), ('adt-l', dict(k=4)),
                                      ('autofreeze', dict(interval=2))])
def test_resumed_schedule_continues_the_same_sequence(name, kw):
    steps = 12
    model = tiny_model('gpt2', n_layers=6)
    full = run_steps(model, make_schedule(name, **kw), DATA, steps=steps, batch_size=4, progress=False)
    seq = full['history']['active']
    # replay the first half, save the schedule's state, continue with a fresh schedule object
    model = tiny_model('gpt2', n_layers=6)
    units = find_units(model)
    first = make_schedule(name, **kw).setup(units, steps)
    with FreezeEngine(model, units) as eng:
        for step in range(steps // 2):
            sel = first.trainable(step)
            eng.activate(list(sel.units))
            if eng.optimizer is None: eng.make_optimizer(torch.optim.AdamW, lr=1e-3)
            x = DATA[(step * 4) % 61:(step * 4) % 61 + 4]
            model_loss(model, dict(input_ids=x, labels=x)).backward()
            first.observe(step, units)
            eng.optimizer.step(); eng.optimizer.zero_grad(set_to_none=True)
    state = first.state_dict()
    second = make_schedule(name, **kw)
    second.load_state_dict(state)
    second.setup(units, steps)
    if name in ('adt-l', 'autofreeze'):  # adaptive: the decision taken so far carries over
        assert second.trainable(steps // 2).units == first.trainable(steps // 2).units
    else:
        assert [list(second.trainable(t).units) for t in range(steps // 2, steps)] == [a for a in seq[steps // 2:]]


def test_lora_cannot_truncate_and_the_checker_says_so():
    pytest.importorskip('peft')
    model = make_schedule('lora').prepare(tiny_model('bert', 'classification', n_layers=3))
    units = find_units(model)
    sel = make_schedule('lora').setup(units, 1).trainable(0)
    batch = dict(input_ids=DATA[:2], labels=torch.tensor([0, 1]))
    with FreezeEngine(model, units) as eng:
        eng.activate(list(sel.units), sel.params)
        assert {n for n, p in model.named_parameters() if p.requires_grad} == \
               {n for n, p in model.named_parameters() if 'lora_' in n or '.classifier.' in n or '.pooler.' in n}
        tr = trace_backward(model, batch, units, active=eng.active)
    assert tr.lowest_reached.name == 'block.0'  # backward runs through every block
    assert all(tr[f'block.{i}'].nodes for i in range(3))
    assert tr.leaks == []


def test_every_name_the_issue_lists_is_registered_with_defaults():
    names = ['full', 'lift', 'lora', 'bitfit', 'head', 'freeze-bottom', 'freeze-top', 'freeze-interval', 'adt-h', 'adt-l',
             'lisa', 'badam', 'autofreeze', 'gradual']
    assert set(names) | {'lift-paper'} == set(SCHEDULES)  # and the paper's LIFT setting as a preset
    model = tiny_model('bert', 'classification', n_layers=4)
    total = sum(p.numel() for p in model.parameters())
    for n in names:
        schedule_options(n)
        c = trainable_count(make_schedule(n), tiny_model('bert', 'classification', n_layers=4), steps=20)
        assert 0 < c <= total, n


def test_bad_input():
    units = find_units(tiny_model('gpt2', n_layers=4))
    with pytest.raises(ValueError, match='Unknown method'): make_schedule('lfit')
    with pytest.raises(TypeError, match="no option 'p'"): make_schedule('lift', p=3)
    with pytest.raises(ValueError, match='outside this model'): make_schedule('lift', range=(1, 5)).setup(units, 8)
    with pytest.raises(ValueError, match='positive int'): make_schedule('lift').setup(units, 0)
    with pytest.raises(ValueError, match='would never train'): make_schedule('lift').setup(units, 2)
    with pytest.raises(ValueError, match='strictly between 0 and 100'): make_schedule('freeze-bottom', p=120)
    with pytest.raises(ValueError, match='strictly between 0 and 100'): make_schedule('autofreeze', percentile=0)
    with pytest.raises(ValueError, match='cannot sample 5 of 4'): make_schedule('lisa', n_layers=5).setup(units, 8)
    with pytest.raises(ValueError, match='leave none of the'): make_schedule('adt-h', k=8).setup(units, 8)
    with pytest.raises(IndexError, match='outside 0..7'): make_schedule('full').setup(units, 8).trainable(8)


def test_a_method_of_ones_own_trains_through_the_trainer_and_the_cli(tmp_path, capsys):
    "The schedule notebook's 'write your own method': registered, its options from the signature, trained by the trainer and by `lift-nb demo`."
    import json
    from lift_nb.cli import main
    from lift_nb.schedule import Schedule, Selection, register_schedule
    from lift_nb.train import LayerwiseTrainer, TrainArgs
    @register_schedule('alternate-test')
    class Alternate(Schedule):
        def __init__(self, every:int=1): pass
        def select(self, step):
            half = (step // self.options['every']) % 2
            return Selection(tuple(f'block.{i}' for i in range(self.units.n_blocks) if i % 2 == half))
    try:
        model = tiny_model('gpt2', n_layers=4)
        before = _snapshot(model)
        ex = [dict(input_ids=x.tolist()) for x in DATA[:16]]
        t = LayerwiseTrainer(model, make_schedule('alternate-test', every=2), ex, TrainArgs(max_steps=4, batch_size=4, progress=False))
        m = t.fit(); t.close()
        assert [h['active'] for h in t.history] == [['block.0', 'block.2']] * 2 + [['block.1', 'block.3']] * 2
        assert m['method'] == 'alternate-test' and m['method_options'] == dict(every=2)
        changed = {n.split('.')[2] for n, p in model.named_parameters() if '.h.' in n and not torch.equal(p, before[n])}
        assert changed == {'0', '1', '2', '3'}
        out = tmp_path / 'demo.json'
        assert main(['demo', '--methods', 'full', 'alternate-test', '--steps', '4', '--n_layers', '2', '--hidden', '32', '--vocab', '64',
                     '--seq_len', '16', '--batch_size', '2', '--no_progress', '--json', str(out)]) == 0
        assert 'alternate-test' in json.loads(out.read_text())['methods']
    finally: del SCHEDULES['alternate-test']


def test_lift_paper_preset():
    "The paper's setting by name: front to end, grouped; its options and flags otherwise those of lift."
    s = make_schedule('lift-paper').setup(find_units(tiny_model('gpt2', n_layers=4)), 8)
    assert [s.trainable(t).blocks() for t in range(8)] == [[0], [0], [1], [1], [2], [2], [3], [3]]
    assert set(schedule_options('lift-paper')) == set(schedule_options('lift'))
    assert make_schedule('lift-paper', policy='cyclic', passes=2).options['schedule'] == 'front2end'
