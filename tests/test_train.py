"The trainer: guard rails, learning-rate warmup restarts, atomic checkpoints, exact resume of every moving method."
import os

import pytest
import torch

from lift_nb.blocks import find_units, tiny_model
from lift_nb.schedule import make_schedule
from lift_nb.train import LayerwiseTrainer, TrainArgs, _atomic_save


def _examples(n=64, seed=0, cls=True):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randint(3, 128, (n, 10), generator=g)
    return [dict(input_ids=x.tolist(), labels=int(x[0]) % 2) if cls else dict(input_ids=x.tolist()) for x in xs]


def test_nan_loss_names_the_step_and_the_block():
    model = tiny_model('gpt2', n_layers=4)
    t = LayerwiseTrainer(model, 'lift', _examples(cls=False), TrainArgs(max_steps=8, batch_size=4, progress=False))
    with torch.no_grad(): model.transformer.h[0].ln_1.weight.fill_(float('nan'))
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 0 with \['block.3'\] active"): t.fit()
    t.close()


def test_warmup_restarts_at_each_switch():
    t = LayerwiseTrainer(tiny_model('gpt2', n_layers=4), make_schedule('lift', policy='grouped', lr_scale=1.0), _examples(cls=False),  # 2 steps a block
                         TrainArgs(max_steps=8, batch_size=4, warmup_steps=2, warmup_restart=True, decay='constant',
                                   learning_rate=1.0, progress=False))
    t.fit(); t.close()
    assert [h['lr'] for h in t.history if 'lr' in h] == [0.5, 1.0] * 4


def test_atomic_save_never_leaves_a_half_written_file(tmp_path):
    path = str(tmp_path / 'ckpt.pt')
    _atomic_save({'a': torch.ones(2)}, path)
    class Boom:
        def __reduce__(self): raise RuntimeError('crash while writing')
    with pytest.raises(RuntimeError, match='crash while writing'): _atomic_save({'a': Boom()}, path)
    assert torch.equal(torch.load(path)['a'], torch.ones(2))  # the old checkpoint is intact


@pytest.mark.parametrize('name,kw', [('lift', dict(schedule='random', state_policy='keep')), ('lisa', dict(interval=3)),
                                      ('badam', dict(switch_every=2, order='random')), ('adt-h', dict(k=3)),
                                      ('autofreeze', dict(interval=2)), ('lora', {}), ('bitfit', {})])
def test_interrupted_and_resumed_run_ends_with_the_same_weights(name, kw, tmp_path):
    def run(stop_after=None, resume=None):
        t = LayerwiseTrainer(tiny_model('bert', 'classification', n_layers=4), make_schedule(name, **kw), _examples(),
                             TrainArgs(max_steps=12, batch_size=8, warmup_steps=2, progress=False, output_dir=str(tmp_path), save_every=6))
        t.fit(resume, stop_after=stop_after)
        w = {k: v.clone() for k, v in t.accelerator.unwrap_model(t.model).state_dict().items()}
        t.close()
        return w
    straight = run()
    run(stop_after=6)
    resumed = run(resume=os.path.join(tmp_path, 'checkpoint-6.pt'))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_bad_mixed_precision_and_decay_are_refused():
    with pytest.raises(ValueError, match="'linear' or 'constant'"):
        LayerwiseTrainer(tiny_model('gpt2', n_layers=2), 'full', _examples(cls=False), TrainArgs(decay='cosine'))


def test_metrics_report_the_accounted_peak():
    t = LayerwiseTrainer(tiny_model('gpt2', n_layers=4), 'lift', _examples(cls=False), TrainArgs(max_steps=4, batch_size=4, progress=False))
    m = t.fit(); t.close()
    params = sum(p.numel() * 4 for p in t.accelerator.unwrap_model(t.model).parameters())
    assert m['peak_memory_bytes'] > params and {'train_runtime', 'train_steps_per_second', 'method'} <= set(m)


def test_hf_trainer_with_liftcallback_saves_and_resumes(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback
    from lift_nb.hf import LiftCallback
    def trainer(model, steps):
        t = Trainer(model=model, args=TrainingArguments(str(tmp_path), max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-2,
                                                        use_cpu=True, report_to=[], save_strategy='steps', save_steps=4,
                                                        logging_strategy='no', disable_tqdm=True, seed=0),
                    train_dataset=Dataset.from_list(_examples(64)), callbacks=[LiftCallback('adt-h', k=2)])
        t.remove_callback(PrinterCallback)
        return t
    model = tiny_model('bert', 'classification', n_layers=4)
    trainer(model, 8).train()
    assert (tmp_path / 'checkpoint-4' / 'lift_schedule.pt').exists()
    resumed = tiny_model('bert', 'classification', n_layers=4)
    cb_trainer = trainer(resumed, 8)
    cb_trainer.train(resume_from_checkpoint=str(tmp_path / 'checkpoint-4'))  # the Trainer reloads its full-size optimizer
    cb = next(c for c in cb_trainer.callback_handler.callbacks if isinstance(c, LiftCallback))
    assert cb.schedule.frozen is not None and len(cb.schedule.frozen) == 2  # ADT's decision came back from the checkpoint


def test_events_come_in_order_and_typos_are_refused():
    from lift_nb.train import EVENTS
    seen = []
    class Recorder: pass
    for e in EVENTS: setattr(Recorder, e, (lambda e: lambda self, trainer, info: seen.append(e))(e))
    t = LayerwiseTrainer(tiny_model('gpt2', n_layers=2), 'lift', _examples(8, cls=False), TrainArgs(max_steps=2, batch_size=4, progress=False), callbacks=[Recorder()])
    t.fit(); t.close()
    step = ['on_step_begin', 'on_before_forward', 'on_after_forward', 'on_after_backward', 'on_before_optimizer_step', 'on_step_end']
    assert seen == ['on_train_begin'] + step + ['on_switch'] + step + ['on_train_end']
    class Typo:
        def on_step_ends(self, trainer, info): pass
    with pytest.raises(ValueError, match='Typo.on_step_ends is not a trainer event'):
        LayerwiseTrainer(tiny_model('gpt2', n_layers=2), 'lift', _examples(8, cls=False), callbacks=[Typo()])


def test_profiler_is_a_callback_that_fills_the_log_and_cleans_up():
    "StepProfiler comes first: a user's on_step_end sees the timings and memory; a forward that fails leaves no saved-tensor hook behind."
    from lift_nb.memory import StepProfiler
    from lift_nb.checker import SavedBytes
    seen = []
    class Peek:
        def on_step_end(self, trainer, info): seen.append(sorted(info))
    t = LayerwiseTrainer(tiny_model('gpt2', n_layers=2), 'lift', _examples(8, cls=False), TrainArgs(max_steps=2, batch_size=4, progress=False), callbacks=[Peek()])
    assert isinstance(t.callbacks[0], StepProfiler) and t.callbacks[0] is t.profiler
    m = t.fit(); t.close()
    for keys in seen: assert {'step_s', 'forward_s', 'backward_s', 'optimizer_s', 'tokens', 'memory', 'loss', 'units'} <= set(keys)
    assert m['peak_memory_bytes'] == max(sum(h['memory'].values()) for h in t.history if 'memory' in h)
    def bad_loss(out, batch): return out.logits.sum() * float('nan')
    t = LayerwiseTrainer(tiny_model('gpt2', n_layers=2), 'full', _examples(8, cls=False), TrainArgs(max_steps=2, batch_size=4, progress=False), loss_fn=bad_loss)
    with pytest.raises(FloatingPointError, match='The loss is nan at step 0'): t.fit()
    t.close()
    assert t.profiler._saved is None
    x = torch.ones(3, requires_grad=True)
    with SavedBytes(torch.nn.Linear(1, 1)) as sb: (x * x).sum()
    assert sb.total == 12  # a fresh count: no hook of the failed run left registered


def test_gradient_checkpointing_in_the_trainer_keeps_losses_and_truncation():
    "TrainArgs(gradient_checkpointing=True): LIFT on a decoder trains to the same losses, with less memory, and the backward still stops at the block."
    from lift_nb.checker import trace_backward
    from lift_nb.data import collate, random_examples
    runs = {}
    for gc in (False, True):
        model = tiny_model('llama', n_layers=3)
        ex = random_examples(model, 32, 16, seed=0)
        t = LayerwiseTrainer(model, 'lift', ex, TrainArgs(max_steps=6, batch_size=4, progress=False, gradient_checkpointing=gc))
        m = t.fit()
        if gc:
            assert model.model.gradient_checkpointing and model.config.use_cache is False
            t.engine.activate(1)
            tr = trace_backward(model, collate(ex[:4]), t.units, active=t.engine.active)
            assert not tr.reaches_below and tr.leaks == [], tr
        t.close()
        runs[gc] = ([h['loss'] for h in t.history if 'loss' in h], m['peak_memory_bytes'])
    assert runs[True][0] == pytest.approx(runs[False][0], abs=1e-5)
    assert runs[True][1] < runs[False][1]


def test_gradient_checkpointing_refused_where_unsupported():
    class NoCkpt(torch.nn.Module):
        supports_gradient_checkpointing = False
    from lift_nb.train import _checkpoint
    with pytest.raises(ValueError, match='drop --gradient_checkpointing'): _checkpoint(NoCkpt())
