"The memory profiler: predictions against the CPU accounting, the built-in configs, and `lift-nb memory`."
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lift_nb.blocks import BUILTIN_MODELS, load_model, tiny_model
from lift_nb.memory import predict_memory, relative_errors
from lift_nb.train import measure_memory

LIFT_NB = str(Path(sys.executable).parent / 'lift-nb')


@pytest.mark.parametrize('model_type,task', [('gpt2', 'causal-lm'), ('llama', 'causal-lm'), ('bert', 'classification')])
@pytest.mark.parametrize('method', ['full', 'lift', 'lora', 'freeze-bottom'])
@pytest.mark.parametrize('dtype', ['fp32', 'bf16'])
def test_prediction_matches_the_cpu_accounting_within_5_percent(model_type, task, method, dtype):
    mk = lambda: tiny_model(model_type, task, n_layers=4, hidden=64)
    pred = predict_memory(mk(), method, batch_size=6, seq_len=24, dtype=dtype)
    meas = measure_memory(mk(), method, batch_size=6, seq_len=24, dtype=dtype)
    err = relative_errors(pred, meas)
    assert all(abs(v) <= 0.05 for v in err.values()), err


def test_lift_peak_is_its_bottom_block_and_memory_falls_with_the_block():
    pred = predict_memory(tiny_model('llama', n_layers=6, hidden=64), 'lift', batch_size=4, seq_len=32)
    sels = sorted(pred.selections, key=lambda s: int(s.label.split('.')[1]))  # by block (the default runs end to front)
    act = [s.total.activations for s in sels]
    assert pred.worst is sels[0] and all(a > b for a, b in zip(act, act[1:]))


def test_builtin_configs_have_the_documented_sizes():
    gpt2 = load_model('gpt2-small')
    assert (gpt2.config.n_layer, gpt2.config.n_embd, gpt2.config.vocab_size) == (12, 768, 50257)
    assert 124e6 < sum(p.numel() for p in gpt2.parameters()) < 125e6
    assert type(load_model('bert-base')).__name__ == 'BertForSequenceClassification'
    assert load_model('llama-small').config.num_hidden_layers == 12


def test_cuda_asked_on_a_cpu_machine_says_so_and_measures_the_cpu(capsys):
    if torch.cuda.is_available(): pytest.skip('this machine has CUDA')
    notes = []
    meas = measure_memory(tiny_model('gpt2', n_layers=2), 'full', batch_size=2, seq_len=8, device='cuda', say=notes.append)
    assert meas.device == 'cpu' and notes == ['CUDA is not available on this machine: measuring the CPU accounting instead.']


def test_lift_nb_memory_on_a_builtin_config_writes_the_json_keys(tmp_path):
    out = tmp_path / 'm.json'
    r = subprocess.run([LIFT_NB, 'memory', '--model', 'gpt2-small', '--method', 'lift', '--batch_size', '2', '--seq_len', '16',
                        '--dtype', 'bf16', '--json', str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert set(res['predicted']) == {'params', 'grads', 'optimizer', 'activations', 'peak'}
    assert res['measured'] is None and res['worst_step'].startswith('block.0')
    assert res['predicted']['params'] == 4 * sum(p.numel() for p in load_model('gpt2-small').parameters())
    # LIFT trains one block and the (tied) head: its grads are far below the parameters
    assert res['predicted']['grads'] < res['predicted']['params'] / 2


def test_lift_nb_memory_bad_input():
    for args, msg in [(['--model', 'gpt2-small', '--method', 'lift', '--seq_len', '5000'], 'beyond the model'),
                      (['--model', 'gpt2-small', '--method', 'nope'], 'Unknown method'),
                      (['--model', '/no/such/dir'], 'Cannot load model'),
                      (['--model', 'gpt2-small', '--method', 'full', '--policy', 'cyclic'], '--policy does not apply')]:
        r = subprocess.run([LIFT_NB, 'memory', *args], capture_output=True, text=True)
        assert r.returncode == 2 and msg in r.stderr, (args, r.stderr[-300:])
