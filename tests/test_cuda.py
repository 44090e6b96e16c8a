"""The CUDA checks (run by tests/gpu.sh on a GPU machine; skipped elsewhere): memory prediction against the allocator,
bf16 mixed-precision training, the trainer end to end on the GPU."""
import pytest
import torch

from lift_nb.blocks import tiny_model
from lift_nb.memory import predict_memory
from lift_nb.train import measure_memory
from lift_nb.train import LayerwiseTrainer, TrainArgs, run_steps

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU (tests/gpu.sh runs these)')


@pytest.mark.parametrize('arch', ['gpt2', 'llama'])
@pytest.mark.parametrize('method', ['full', 'lift'])
def test_prediction_within_10_percent_of_the_allocator(arch, method):
    mk = lambda: tiny_model(arch, n_layers=8, hidden=256, vocab=4096, positions=256).cuda()
    meas = measure_memory(mk(), method, batch_size=8, seq_len=256, device='cuda')
    pred = predict_memory(mk(), method, batch_size=8, seq_len=256)
    allocated = max(max(s[ph]['allocated'] for ph in ('forward', 'backward', 'optimizer')) for s in meas.cuda)
    weights_etc = sum(p.numel() * p.element_size() for p in mk().parameters())  # what is resident before the step
    err = (pred.peak.peak - allocated) / allocated
    print(f"{arch} {method}: predicted {pred.peak.peak:,} B, allocator peak {allocated:,} B ({err:+.1%}); weights {weights_etc:,} B")
    assert abs(err) <= 0.10, f"{arch} {method}: prediction off by {err:+.1%}"


def test_bf16_training_run_learns():
    model = tiny_model('llama', n_layers=4, hidden=256, vocab=512).cuda()
    data = torch.randint(3, 512, (64, 64), generator=torch.Generator().manual_seed(0))
    out = run_steps(model, 'full', data, steps=30, batch_size=8, lr=1e-3, progress=False, dtype='bf16', device='cuda')
    losses = out['history']['loss']
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert out['history']['cuda'] and out['memory']['grads'] > 0


def test_trainer_on_the_gpu_classifier_bf16():
    g = torch.Generator().manual_seed(0)
    xs = torch.randint(3, 128, (256, 12), generator=g)
    ex = [dict(input_ids=x.tolist(), labels=int(x[0]) % 2) for x in xs]
    t = LayerwiseTrainer(tiny_model('bert', 'classification', n_layers=4), 'lift', ex[:192],
                         TrainArgs(max_steps=40, batch_size=16, learning_rate=1e-2, mixed_precision='bf16', progress=False), ex[192:])
    m = t.fit(); t.close()
    assert t.accelerator.device.type == 'cuda' and m['peak_memory_bytes'] > 0 and 0 <= m['eval_accuracy'] <= 1
