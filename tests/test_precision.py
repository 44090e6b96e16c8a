"""Precision chosen by capability (issue #16): 'auto' is bf16 where the device computes it natively, fp32 elsewhere;
bf16 asked for on a CPU without it warns; what ran is recorded with the machine in every JSON and printed in the tables.

The suite pins AVX2 kernels (conftest.py), so on every machine `native_bf16('cpu')` is False here; the bf16 side of
'auto' is checked by telling lift_nb that the CPU has it (monkeypatching `lift_nb.machine.native_bf16`)."""
import json
import warnings

import pytest
import torch

import lift_nb.machine as machine
from lift_nb.blocks import tiny_model
from lift_nb.machine import SlowBF16Warning, machine_info, native_bf16, resolve_precision
from lift_nb.train import LayerwiseTrainer, TrainArgs


def _lm_data(n=8, seq=8):
    return [dict(input_ids=x.tolist()) for x in torch.randint(3, 60, (n, seq), generator=torch.Generator().manual_seed(0))]


def _fit(args, method='lift'):
    model = tiny_model('gpt2', n_layers=2, vocab=64)
    t = LayerwiseTrainer(model, method, _lm_data(), args)
    try: return t, t.fit()
    finally: t.close()


def test_the_suite_runs_at_avx2_so_auto_is_fp32():
    assert torch.backends.cpu.get_cpu_capability() == 'AVX2' and not native_bf16('cpu')
    assert resolve_precision('auto', 'cpu') == 'fp32'


def test_auto_is_fp32_here_and_recorded_with_the_machine():
    t, m = _fit(TrainArgs(max_steps=2, batch_size=4, progress=False, cpu=True))
    assert t.engine.frozen_dtype is None and t.mixed_precision == 'no'
    info = machine_info('cpu')
    assert (m['frozen_dtype'], m['mixed_precision'], m['cpu'], m['cpu_capability'], m['native_bf16']) == \
           ('fp32', 'no', info['cpu'], 'AVX2', False)
    assert m['threads'] == torch.get_num_threads()


def test_auto_is_bf16_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setattr(machine, 'native_bf16', lambda device='cpu': True)
    with warnings.catch_warnings():
        warnings.simplefilter('error', SlowBF16Warning)  # native: no warning
        t, m = _fit(TrainArgs(max_steps=2, batch_size=4, progress=False, cpu=True, mixed_precision='auto'))
    assert t.engine.frozen_dtype == torch.bfloat16 and (m['frozen_dtype'], m['mixed_precision']) == ('bf16', 'bf16')


def test_bf16_on_a_cpu_without_it_warns_once_and_still_runs():
    with pytest.warns(SlowBF16Warning, match="about 6x slower than fp32"):
        t, m = _fit(TrainArgs(max_steps=2, batch_size=4, progress=False, cpu=True, frozen_dtype='bf16'))
    assert t.engine.frozen_dtype == torch.bfloat16 and m['frozen_dtype'] == 'bf16'


def test_fp32_and_none_are_as_loaded():
    for fd in ('fp32', None):
        t, m = _fit(TrainArgs(max_steps=2, batch_size=4, progress=False, cpu=True, frozen_dtype=fd))
        assert t.engine.frozen_dtype is None and m['frozen_dtype'] == 'fp32'


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="frozen_dtype must be 'auto', 'bf16', 'fp32' or None"): TrainArgs(frozen_dtype='int8')
    with pytest.raises(ValueError, match="mixed_precision must be 'no', 'bf16', 'fp16' or 'auto'"): TrainArgs(mixed_precision='fp8')
    with pytest.raises(ValueError, match="dtype must be one of auto, fp32, bf16, fp16"): resolve_precision('int4', what='dtype')


def test_bench_records_the_choice_and_the_machine():
    from lift_nb.bench import bench, bench_table
    mk = lambda: tiny_model('bert', 'classification', n_layers=2, hidden=32, heads=4, vocab=128, positions=64)
    res = bench(mk, methods=('full', 'lift'), seq_len=16, steps=1, warmup=0, progress=False)
    assert (res['dtype'], res['frozen_dtype'], res['asked']) == ('fp32', 'fp32', dict(dtype='fp32', frozen_dtype='auto'))
    assert (res['cpu_capability'], res['native_bf16'], res['cpu']) == ('AVX2', False, machine_info()['cpu'])
    head = bench_table(res).splitlines()[0]
    assert 'fp32, frozen units in fp32 (auto)' in head and '(AVX2, no native bf16)' in head
    json.dumps(res)  # what --json writes


def test_memory_cli_records_the_choice(tmp_path, capsys):
    from lift_nb.cli import main
    out = tmp_path / 'mem.json'
    assert main(['memory', '--model', 'gpt2-small', '--method', 'lift', '--batch_size', '1', '--seq_len', '8', '--json', str(out)]) in (0, None)
    r = json.loads(out.read_text())
    assert (r['dtype'], r['frozen_dtype'], r['asked']['frozen_dtype'], r['cpu_capability']) == ('fp32', 'fp32', 'auto', 'AVX2')
    assert 'fp32, frozen units fp32 (auto)' in capsys.readouterr().out
