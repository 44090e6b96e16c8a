"Layer-wise methods on 2 CPU processes (torchrun, gloo, accelerate's DDP and FSDP2): ranks agree, N processes = accumulation over N, resume, the CLI."
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lift_nb.blocks import tiny_model
from lift_nb.freeze import FreezeEngine
from lift_nb.distributed import ENGINE_LIMITS, BlockSync, changes_trainable_set, check_engine
from lift_nb.schedule import make_schedule
from lift_nb.train import LayerwiseTrainer, TrainArgs

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
# every method whose trainable set changes during training, with options that switch within 8 steps
MOVING = {'lift': {}, 'lisa': dict(n_layers=1, interval=2), 'badam': dict(switch_every=2), 'gradual': dict(every=2),
          'adt-h': dict(k=3, n_freeze=2), 'adt-l': dict(k=3, n_freeze=2), 'autofreeze': dict(interval=2, percentile=90)}
STEPS, BS = 8, 4

WORKER = '''
import json, os, sys, torch
from lift_nb.blocks import tiny_model
from lift_nb.distributed import end_processes, gather_full
from lift_nb.schedule import make_schedule
from lift_nb.train import LayerwiseTrainer, TrainArgs

FSDP = os.environ.get('ACCELERATE_USE_FSDP') == 'true'
def model(): return tiny_model('gpt2', n_layers=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
def examples():
    g = torch.Generator().manual_seed(0)
    return [dict(input_ids=x.tolist()) for x in torch.randint(3, 128, (64, 12), generator=g)]

class Snap:
    "The weights after every step."
    def __init__(self): self.w = []
    def on_step_end(self, tr, info):
        self.w.append({n: gather_full(p.detach()).clone() for n, p in tr.accelerator.unwrap_model(tr.model).named_parameters()})

def train(method, opts, out=None, stop_after=None, resume=None, grad_accum=1):
    snap = Snap()
    t = LayerwiseTrainer(model(), make_schedule(method, **opts), examples(),
                         TrainArgs(max_steps=%(steps)d, batch_size=%(bs)d, grad_accum=grad_accum, learning_rate=1e-2, cpu=True,
                                   progress=False, output_dir=out, save_every=4 if out else None), callbacks=[snap])
    t.fit(resume, stop_after=stop_after)
    return t, snap

out = sys.argv[1]
methods = json.loads(sys.argv[2])
res = {}
for name, opts in methods.items():
    t, snap = train(name, opts, grad_accum=2)
    res[name] = dict(w=snap.w, active=[h['units'] for h in t.history if 'units' in h], engine=t.engine_name, switches=len(t.switch_s),
                     loss=[h['loss'] for h in t.history if 'loss' in h], rewraps=t.sync.rewraps, disagreements=t.sync.disagreements,
                     sharded=type(next(t.accelerator.unwrap_model(t.model).parameters())).__name__)
    t.close()
# LISA's reference code samples on each rank independently: a different seed per rank must still train one block everywhere
rank = int(os.environ['RANK'])
rank_seed = rank * 7 + 1
t, snap = train('lisa', dict(n_layers=1, interval=2, seed=rank_seed))
res['lisa-rank-seed'] = dict(w=snap.w, active=[h['units'] for h in t.history if 'units' in h], disagreements=t.sync.disagreements)
t.close()
# interrupted after step 4 (its checkpoint), resumed: as a straight run
t, straight = train('lift', dict(policy='cyclic', state_policy='keep')); t.close()
t, _ = train('lift', dict(policy='cyclic', state_policy='keep'), out=out, stop_after=4); t.close()
t, resumed = train('lift', dict(policy='cyclic', state_policy='keep'), out=out, resume=f'{out}/checkpoint-4.pt'); t.close()
res['resume'] = dict(straight=straight.w[-1], resumed=resumed.w[-1])
# evaluation sharded over the ranks: 35 examples = 9 batches of 4, so rank 1 has 4 and re-runs one uncounted
t, _ = train('lift', dict(policy='cyclic', state_policy='keep'))
forwards = []
hook = t.accelerator.unwrap_model(t.model).register_forward_pre_hook(lambda *a: forwards.append(1))
res['eval'] = dict(metrics=t.evaluate(examples()[:35]), forwards=len(forwards),
                   state={k: gather_full(v).clone() for k, v in t.accelerator.unwrap_model(t.model).state_dict().items()})
hook.remove(); t.close()
if FSDP:  # the rest is DDP's run only
    torch.save(res, f'{out}/rank{rank}.pt'); end_processes(); sys.exit(0)
# FSDP2 (what accelerate's fsdp_version: 2 calls; accelerate itself enables FSDP only on GPUs): fully_shard + the engine
from torch.distributed.fsdp import fully_shard
from lift_nb.freeze import FreezeEngine
m = model()
for b in m.transformer.h: fully_shard(b)
fully_shard(m)
eng = FreezeEngine(m)
opt = eng.attach_optimizer(torch.optim.SGD(m.parameters(), lr=0.5))  # linear in the gradients: float noise stays small
ids, w = torch.tensor([e['input_ids'] for e in examples()]), []
for step in range(4):
    eng.activate([f'block.{step}', 'final_norm', 'head'])  # requires_grad changes on the sharded parameters
    x = ids[(step * 2 + rank) * 4:(step * 2 + rank + 1) * 4]
    m(input_ids=x, labels=x).loss.backward()
    opt.step(); opt.zero_grad(set_to_none=True)
    w.append({n: p.full_tensor().clone() for n, p in m.named_parameters()})
res['fsdp2'] = dict(w=w, sharded=type(next(m.parameters())).__name__)
torch.save(res, f'{out}/rank{rank}.pt')
end_processes()  # exit without Python's teardown, where gloo's threads could abort the process
'''


# what `accelerate launch` sets from an FSDP2 config (fsdp_version: 2, every GPT-2 block wrapped)
FSDP2 = dict(ACCELERATE_USE_FSDP='true', FSDP_VERSION='2', FSDP_AUTO_WRAP_POLICY='TRANSFORMER_BASED_WRAP',
             FSDP_TRANSFORMER_CLS_TO_WRAP='GPT2Block')


def _env(**more):
    "The children's environment: CPU processes, one thread each; `more` adds variables (None removes one)."
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'ACCELERATE_USE_CPU': '1', 'HF_HUB_OFFLINE': '1', **more}
    env = {k: v for k, v in env.items() if v is not None}  # None: unset it
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    return env


def _free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _torchrun(args, timeout=180, **env):
    "Run `args` on 2 CPU processes (`env`: more environment variables); on failure or timeout show the end of the children's stderr."
    cmd = [str(BIN / 'torchrun'), '--nproc_per_node', '2', '--master_addr', '127.0.0.1', '--master_port', str(_free_port()), *map(str, args)]
    try: r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(**env))
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or '')
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{err[-4000:]}")
    assert r.returncode == 0, f"torchrun failed ({r.returncode}):\n{r.stderr[-4000:]}"
    return r


def _launch(d, **env):
    (d / 'worker.py').write_text(textwrap.dedent(WORKER % dict(steps=STEPS, bs=BS)))
    _torchrun([d / 'worker.py', d, json.dumps(MOVING)], timeout=300, **env)
    return [torch.load(d / f'rank{r}.pt', weights_only=False) for r in (0, 1)]


@pytest.fixture(scope='module')
def ddp(tmp_path_factory): return _launch(tmp_path_factory.mktemp('ddp'))


@pytest.fixture(scope='module')
def fsdp(tmp_path_factory): return _launch(tmp_path_factory.mktemp('fsdp'), **FSDP2)


@pytest.fixture(params=['ddp', 'fsdp'])
def run(request):
    "Each engine's run: the same tests hold under DDP and under FSDP2."
    return request.getfixturevalue(request.param)


def _single(method, opts, grad_accum):
    "The same run in this process, accumulating over the micro-batches the two processes shared."
    class Snap:
        w = []
        def on_step_end(self, tr, info): self.w.append({n: p.detach().clone() for n, p in tr.accelerator.unwrap_model(tr.model).named_parameters()})
    g = torch.Generator().manual_seed(0)
    ex = [dict(input_ids=x.tolist()) for x in torch.randint(3, 128, (64, 12), generator=g)]
    s = Snap(); s.w = []
    t = LayerwiseTrainer(tiny_model('gpt2', n_layers=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0), make_schedule(method, **opts), ex,
                         TrainArgs(max_steps=STEPS, batch_size=BS, grad_accum=grad_accum, learning_rate=1e-2, cpu=True, progress=False),
                         callbacks=[s])
    threads = torch.get_num_threads(); torch.set_num_threads(1)  # tiny matrices: more threads only fight over 2 shared cores
    try: t.fit()
    finally: t.close(); torch.set_num_threads(threads)
    return s.w, [h['units'] for h in t.history if 'units' in h], [h['loss'] for h in t.history if 'loss' in h]


def test_evaluation_is_sharded_and_equals_one_process(run):
    assert [r['eval']['forwards'] for r in run] == [5, 5]  # 9 batches over 2 ranks: 5 and 4 (+1 uncounted)
    assert run[0]['eval']['metrics'] == run[1]['eval']['metrics']
    g = torch.Generator().manual_seed(0)
    ex = [dict(input_ids=x.tolist()) for x in torch.randint(3, 128, (64, 12), generator=g)]
    m = tiny_model('gpt2', n_layers=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    m.load_state_dict(run[0]['eval']['state'])
    t = LayerwiseTrainer(m, 'full', ex, TrainArgs(max_steps=1, batch_size=BS, cpu=True, progress=False))
    one = t.evaluate(ex[:35]); t.close()
    assert one.keys() == run[0]['eval']['metrics'].keys()
    for k, v in one.items(): assert abs(v - run[0]['eval']['metrics'][k]) < 1e-5 * max(1, abs(v)), (k, v, run[0]['eval']['metrics'][k])


@pytest.mark.parametrize('method', list(MOVING))
def test_ranks_hold_identical_weights_after_every_step(run, method):
    a, b = run[0][method], run[1][method]
    assert a['active'] == b['active'] and a['disagreements'] == b['disagreements'] == 0
    for step, (wa, wb) in enumerate(zip(a['w'], b['w'])):
        bad = [n for n in wa if not torch.equal(wa[n], wb[n])]
        assert not bad, f"{method}: step {step + 1}: ranks differ in {bad[:3]}"


@pytest.mark.parametrize('method', list(MOVING))
def test_two_processes_equal_one_accumulating_over_both(run, method):
    w, active, loss = _single(method, MOVING[method], grad_accum=4)  # 2 processes x 2 micro-batches
    d = run[0][method]
    assert d['active'] == active
    # losses agree to 1e-4 (the notebook's tolerance too): after a few steps the rare elements below move the loss a little
    torch.testing.assert_close(d['loss'], loss, rtol=0, atol=1e-4)
    # AdamW moves each element by up to lr whatever the gradient's size, so float noise in a near-zero gradient (the
    # reduction order differs) can move a rare element by up to 2 x lr: all within that, at most 0.1% beyond 1e-3
    # reduction order differs (FSDP2 reduce-scatters, DDP all-reduces), so the count is over the whole model at each step
    for step, (wd, ws) in enumerate(zip(d['w'], w)):
        diff = torch.cat([(wd[n] - ws[n]).abs().flatten() for n in ws])
        assert float(diff.max()) <= 2 * 1e-2 + 1e-6 and float((diff > 1e-3).float().mean()) <= 1e-3, \
            f"{method} step {step + 1}: max diff {float(diff.max()):.2e}, {int((diff > 1e-3).sum())} of {diff.numel()} elements beyond 1e-3"


@pytest.mark.parametrize('method', list(MOVING))
def test_every_scheduled_block_changed_and_the_engine_followed_each_switch(run, method):
    d = run[0][method]
    first, last = d['w'][0], d['w'][-1]
    init = {n: p.detach() for n, p in tiny_model('gpt2', n_layers=4).named_parameters()}
    scheduled = sorted({u for units in d['active'] for u in units if u.startswith('block.')})
    for blk in scheduled:
        i = blk.split('.')[1]
        names = [n for n in last if n.startswith(f'transformer.h.{i}.')]
        assert any(not torch.equal(last[n], init[n]) for n in names), f"{method}: {blk} was scheduled but did not change"
    switches = sum(1 for x, y in zip(d['active'], d['active'][1:]) if x != y)
    assert switches >= 1 and d['switches'] == switches, (switches, d['switches'])
    if d['engine'] == 'ddp': assert d['rewraps'] == switches and d['sharded'] == 'Parameter'  # one new reducer per switch, none otherwise
    else: assert d['engine'] == 'fsdp2' and d['rewraps'] == 0 and d['sharded'] == 'DTensor'  # sharded; nothing to rebuild
    assert first.keys() == last.keys()


def test_a_per_rank_random_choice_is_overruled_by_rank_0(run):
    a, b = run[0]['lisa-rank-seed'], run[1]['lisa-rank-seed']
    assert a['active'] == b['active']
    assert b['disagreements'] > 0 and a['disagreements'] == 0  # rank 1's own draws differed; rank 0's were used
    assert all(torch.equal(a['w'][-1][n], b['w'][-1][n]) for n in a['w'][-1])


def test_resume_across_processes_ends_with_the_same_weights(run):
    for r in run:
        s, m = r['resume']['straight'], r['resume']['resumed']
        assert all(torch.equal(s[n], m[n]) for n in s)
    assert all(torch.equal(run[0]['resume']['resumed'][n], run[1]['resume']['resumed'][n]) for n in run[0]['resume']['resumed'])


def test_fsdp2_shards_follow_each_switch(ddp):
    a, b = ddp[0]['fsdp2'], ddp[1]['fsdp2']
    assert a['sharded'] == 'DTensor'
    m = tiny_model('gpt2', n_layers=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    init = {n: p.detach().clone() for n, p in m.named_parameters()}
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 128, (64, 12), generator=g)
    eng = FreezeEngine(m)
    opt = eng.attach_optimizer(torch.optim.SGD(m.parameters(), lr=0.5))  # linear in the gradients: float noise stays small
    for step in range(4):  # one process, the batches of both ranks at once
        eng.activate([f'block.{step}', 'final_norm', 'head'])
        x = ids[step * 8:(step + 1) * 8]
        m(input_ids=x, labels=x).loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        for n, p in m.named_parameters():
            assert torch.equal(a['w'][step][n], b['w'][step][n]), (step, n)
            torch.testing.assert_close(a['w'][step][n], p.detach(), rtol=1e-4, atol=1e-5, msg=lambda s: f'{step} {n} {s}')
        assert not torch.equal(a['w'][step][f'transformer.h.{step}.mlp.c_fc.weight'], init[f'transformer.h.{step}.mlp.c_fc.weight'])
    eng.remove()


ENGINE_ENV = {'ddp': {}, 'fsdp2': dict(FSDP2, FSDP_TRANSFORMER_CLS_TO_WRAP='BertLayer'),  # what `accelerate launch` sets
              'zero2': dict(ACCELERATE_USE_DEEPSPEED='true', ACCELERATE_DEEPSPEED_ZERO_STAGE='2', DS_ACCELERATOR='cpu', ACCELERATE_USE_CPU=None),
              'zero3': dict(ACCELERATE_USE_DEEPSPEED='true', ACCELERATE_DEEPSPEED_ZERO_STAGE='3', DS_ACCELERATOR='cpu', ACCELERATE_USE_CPU=None)}


@pytest.mark.parametrize('engine,method', [('ddp', 'lift'), ('fsdp2', 'lift'), ('fsdp2', 'lora'), ('zero2', 'lora'),
                                           ('zero3', 'freeze-bottom'), ('zero3', 'lora')])
def test_cli_train_under_torchrun_writes_once(tmp_path, engine, method):
    from lift_nb.data import word_tokenizer
    word_tokenizer('the film was good bad fine awful plot'.split(), specials=('[PAD]', '[UNK]')).save_pretrained(tmp_path / 'm')
    if engine.startswith('zero'): pytest.importorskip('deepspeed')
    tiny_model('bert', 'classification', n_layers=2, vocab=16).save_pretrained(tmp_path / 'm')
    with open(tmp_path / 'train.csv', 'w') as f:
        f.write('text,label\n' + ''.join(f"the film was {'good' if i % 2 else 'bad'},{i % 2}\n" for i in range(32)))
    r = _torchrun([BIN / 'lift-nb', 'train', '--model_name_or_path', tmp_path / 'm', '--train_file', tmp_path / 'train.csv',
                   '--label_column', 'label', '--max_steps', '4', '--per_device_train_batch_size', '4', '--method', method,
                   '--output_dir', tmp_path / 'out', '--no_progress'] + ([] if engine.startswith('zero') else ['--save_steps', '2']),
                  timeout=600, **ENGINE_ENV[engine])
    assert r.stdout.count('wrote ') == 1, r.stdout  # rank 0 reports and writes
    m = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert m['num_processes'] == 2 and m['max_steps'] == 4 and m['engine'] == ('deepspeed' if engine.startswith('zero') else engine)
    assert (tmp_path / 'out' / 'model.safetensors').exists()
    # the written model is whole (FSDP2 and ZeRO-3: gathered from both ranks) and trained: every tensor full-sized
    from transformers import AutoModelForSequenceClassification
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / 'out')
    init = tiny_model('bert', 'classification', n_layers=2, vocab=16).state_dict()
    assert {n: p.shape for n, p in saved.state_dict().items()} == {n: p.shape for n, p in init.items()}
    assert any(not torch.equal(p, init[n]) for n, p in saved.state_dict().items())
    if not engine.startswith('zero'):
        ckpt = torch.load(tmp_path / 'out' / 'checkpoint-4.pt', weights_only=False)
        if method == 'lift':  # (LoRA's file holds the merged weights, its checkpoint the adapters)
            for n, p in saved.state_dict().items(): torch.testing.assert_close(p, ckpt['model'][n], msg=n)


def test_engines_that_cannot_follow_a_switch_are_refused():
    class FakeAccelerator:  # what accelerate reports under an FSDP1 or DeepSpeed launch (neither runs on these CPUs)
        def __init__(self, t, fsdp2=False): self.distributed_type, self.is_fsdp2 = t, fsdp2
    for t, eng in (('DistributedType.FSDP', 'fsdp1'), ('DistributedType.DEEPSPEED', 'deepspeed')):
        with pytest.raises(ValueError, match=f"which {eng} does not support.*Instead: "):
            check_engine(make_schedule('lift'), FakeAccelerator(t))
        assert check_engine(make_schedule('freeze-bottom'), FakeAccelerator(t)) == eng  # static methods run there
    assert check_engine(make_schedule('lift'), FakeAccelerator('DistributedType.FSDP', fsdp2=True)) == 'fsdp2'
    assert check_engine(make_schedule('lisa'), FakeAccelerator('DistributedType.MULTI_GPU')) == 'ddp'
    assert set(ENGINE_LIMITS) >= {'fsdp1', 'deepspeed'}
    assert [n for n in ('lift', 'lisa', 'badam', 'gradual', 'adt-h', 'autofreeze', 'full', 'lora', 'freeze-top')
            if changes_trainable_set(make_schedule(n))] == ['lift', 'lisa', 'badam', 'gradual', 'adt-h', 'autofreeze']


def test_several_processes_without_a_distributed_accelerator_are_refused(monkeypatch):
    class OneProcess: num_processes = 1  # what accelerate reports when it was not told to use the CPUs of a launch
    monkeypatch.setenv('WORLD_SIZE', '2')
    with pytest.raises(RuntimeError, match='ACCELERATE_USE_CPU=1'): BlockSync(OneProcess())


END_WORKER = '''
import sys, torch, torch.distributed as dist
from lift_nb.distributed import end_processes
dist.init_process_group('gloo')
out = [torch.zeros(2) for _ in range(2)]
dist.all_gather(out, torch.full((2,), float(dist.get_rank())))  # a collective whose tensors gloo's threads release
print(f"rank {dist.get_rank()} gathered {[float(o[0]) for o in out]}")
end_processes()
open(f"{sys.argv[1]}/after{dist.get_rank()}", 'w').write('not reached')
'''


def test_end_processes_flushes_and_exits_every_rank(tmp_path):
    "A launched script's last call: its output arrives, nothing after it runs, every rank exits 0 (torchrun's code 0)."
    (tmp_path / 'worker.py').write_text(END_WORKER)
    r = _torchrun([tmp_path / 'worker.py', tmp_path])
    # both ranks write to one pipe, so their lines may interleave mid-line: find the messages, not the lines
    assert sorted(re.findall(r"rank (\d) gathered \[0\.0, 1\.0\]", r.stdout)) == ['0', '1'], r.stdout
    assert not list(tmp_path.glob('after*'))


HF_WORKER = '''
import os, sys, torch
from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments
from lift_nb.blocks import tiny_model
from lift_nb.distributed import end_processes
from lift_nb.hf import LiftCallback
ids = torch.randint(3, 128, (64, 12), generator=torch.Generator().manual_seed(0))
model = tiny_model('gpt2', n_layers=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
snaps = [{n: p.detach().clone() for n, p in model.named_parameters()}]
class Snap(TrainerCallback):
    def on_step_end(self, args, state, control, model=None, **kw):
        snaps.append({n: p.detach().clone() for n, p in model.named_parameters()})
args = TrainingArguments(output_dir=sys.argv[1], max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2, report_to=[],
                         use_cpu=True, save_strategy='no', disable_tqdm=True)
tr = Trainer(model=model, args=args, train_dataset=Dataset.from_dict(dict(input_ids=ids.tolist(), labels=ids.tolist())),
             callbacks=[LiftCallback('lift', schedule='front2end', policy='grouped'), Snap()])
tr.train()
torch.save(dict(snaps=snaps, wrapper=type(tr.model_wrapped).__name__), f"{sys.argv[1]}/rank{os.environ['RANK']}.pt")
end_processes()
'''


def test_hf_trainer_with_the_callback_under_ddp(tmp_path):
    "transformers' Trainer wraps the model in DDP once; with `LiftCallback` each step still moves only its block, on both ranks alike."
    (tmp_path / 'worker.py').write_text(HF_WORKER)
    _torchrun([tmp_path / 'worker.py', tmp_path])
    r0, r1 = [torch.load(tmp_path / f'rank{r}.pt', weights_only=False) for r in (0, 1)]
    assert r0['wrapper'] == 'DistributedDataParallel' and len(r0['snaps']) == 5
    for step in range(1, 5):
        a, b = r0['snaps'][step], r1['snaps'][step]
        assert all(torch.equal(a[n], b[n]) for n in a), f"ranks differ after step {step}"
        prev = r0['snaps'][step - 1]
        moved = sorted({n.split('.')[2] for n in a if n.startswith('transformer.h.') and not torch.equal(a[n], prev[n])})
        assert moved == [str(step - 1)], (step, moved)  # front to end, one step per block; frozen blocks keep still


DS_WORKER = '''
import os, sys, torch
from lift_nb.blocks import tiny_model
from lift_nb.distributed import end_processes
from lift_nb.schedule import make_schedule
from lift_nb.train import LayerwiseTrainer, TrainArgs
examples = [dict(input_ids=x.tolist()) for x in torch.randint(3, 128, (64, 12), generator=torch.Generator().manual_seed(0))]
def weights(t):
    raw = t.accelerator.unwrap_model(t.model)
    if callable(getattr(raw, 'get_base_model', None)): raw = raw.get_base_model()
    ps = list(raw.named_parameters())
    if hasattr(ps[0][1], 'ds_id'):  # ZeRO-3: each rank holds a partition; gather to read
        import deepspeed
        with deepspeed.zero.GatheredParameters([p for _, p in ps]): return {n: p.detach().clone() for n, p in ps}
    return {n: p.detach().clone() for n, p in ps}
res, methods = {}, ('freeze-bottom', 'bitfit', 'lora')
# built before any trainer: once a ZeRO-3 accelerator exists, transformers builds new models inside deepspeed.zero.Init
# (partitioned as they are made, initialised differently), and this test compares with DDP from the same weights
models = {m: tiny_model('gpt2', n_layers=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0) for m in methods}
for method in methods:
    t = LayerwiseTrainer(models[method], make_schedule(method),
                         examples, TrainArgs(max_steps=4, batch_size=4, learning_rate=1e-2, weight_decay=0.1, progress=False))
    t.fit()
    res[method] = dict(engine=t.engine_name, loss=[h['loss'] for h in t.history], w=weights(t))
    t.close()
try: LayerwiseTrainer(tiny_model('gpt2', n_layers=4), 'lift', examples, TrainArgs(max_steps=4, progress=False)); res['lift'] = 'ran'
except ValueError as e: res['lift'] = str(e)
torch.save(res, f"{sys.argv[1]}/rank{os.environ['RANK']}.pt")
end_processes()
'''


@pytest.fixture(scope='module')
def deepspeed_runs(tmp_path_factory):
    "The same static methods under DDP and under DeepSpeed ZeRO-2 and ZeRO-3 (2 CPU processes, gloo)."
    pytest.importorskip('deepspeed')  # .ci/run installs it; `pip install deepspeed` (a CUDA toolkit is not needed on CPU)
    out = {}
    for name, env in (('ddp', {}), ('zero2', dict(ACCELERATE_DEEPSPEED_ZERO_STAGE='2')), ('zero3', dict(ACCELERATE_DEEPSPEED_ZERO_STAGE='3'))):
        d = tmp_path_factory.mktemp(name)
        (d / 'worker.py').write_text(DS_WORKER)
        if name != 'ddp':  # accelerate turns DeepSpeed off when told to use the CPU: a plain launch, DeepSpeed picks its CPU backend
            env = dict(env, ACCELERATE_USE_DEEPSPEED='true', DS_ACCELERATOR='cpu', ACCELERATE_USE_CPU=None)
        _torchrun([d / 'worker.py', d], timeout=600, **env)  # the first DeepSpeed run builds a small CPU op (about a minute)
        out[name] = [torch.load(d / f'rank{r}.pt', weights_only=False) for r in (0, 1)]
    return out


@pytest.mark.parametrize('stage', ['zero2', 'zero3'])
@pytest.mark.parametrize('method', ['freeze-bottom', 'bitfit', 'lora'])
def test_static_methods_under_deepspeed_equal_ddp(deepspeed_runs, stage, method):
    ds, ddp = deepspeed_runs[stage], deepspeed_runs['ddp']
    assert ds[0][method]['engine'] == 'deepspeed' and ddp[0][method]['engine'] == 'ddp'
    torch.testing.assert_close(ds[0][method]['loss'], ddp[0][method]['loss'], rtol=0, atol=1e-4)
    init = {n: p.detach() for n, p in tiny_model('gpt2', n_layers=4).named_parameters()}
    w, ref = ds[0][method]['w'], ddp[0][method]['w']
    # ZeRO reduce-scatters where DDP all-reduces: the sums come in another order, and AdamW's first steps (sign-like,
    # about lr per element) turn a last-digit difference in a near-zero gradient into up to 1.5e-5 (seen on an AVX2-only
    # CPU, one element of 57k). Counted over the whole model: every element within 1e-4, at most 0.1% beyond 1e-5.
    diffs = torch.cat([(w[n] - ref[n]).abs().flatten() for n in ref])
    assert float(diffs.max()) <= 1e-4, f"largest difference {float(diffs.max()):.2e}"
    assert float((diffs > 1e-5).float().mean()) <= 1e-3, f"{int((diffs > 1e-5).sum())} of {diffs.numel()} elements beyond 1e-5"
    for n in ref:
        assert torch.equal(w[n], ds[1][method]['w'][n]), f"ranks differ in {n}"
        if method == 'freeze-bottom' and n.startswith(('transformer.h.0.', 'transformer.h.1.')):
            assert torch.equal(w[n], init[n]), f"{n} is frozen but moved (weight decay 0.1 would move it if ZeRO held it)"


def test_a_switching_method_is_refused_under_deepspeed_before_training(deepspeed_runs):
    for stage in ('zero2', 'zero3'):
        msg = deepspeed_runs[stage][0]['lift']
        assert 'which deepspeed does not support' in msg and 'Instead: ' in msg and 'FSDP2' in msg, msg
    assert deepspeed_runs['ddp'][0]['lift'] == 'ran'
