"`lift_nb.bench` on tiny configs: the result's shape, LIFT per block, the frozen-dtype setting and the targets."
from contextlib import nullcontext

import pytest
import torch

from lift_nb.bench import bench, bench_targets, bench_method, targets_table
from lift_nb.blocks import tiny_model
from lift_nb.machine import native_bf16


def _bert():
    return tiny_model('bert', 'classification', n_layers=3, hidden=32, heads=4, vocab=128, positions=64)


def test_classifier_bench_trains_the_head_with_every_block():
    with pytest.warns(UserWarning) if not native_bf16() else nullcontext():  # bf16 asked for on a CPU without it: SlowBF16Warning
        res = bench(_bert, methods=('full', 'lift', 'bitfit', 'freeze-bottom'), seq_len=16, steps=1, warmup=0, progress=False,
                    frozen_dtype='bf16')
    assert list(res['methods']) == ['full', 'lift', 'bitfit', 'freeze-bottom'] and 'head_share' not in res
    lift = res['methods']['lift']
    assert [r['units'] for r in lift['blocks']] == [['block.0', 'head'], ['block.1', 'head'], ['block.2', 'head']]
    for m in res['methods'].values():
        assert m['step_s'] > 0 and m['tokens_per_s'] == pytest.approx(2 * 16 / m['step_s'])
        assert m['ratio_to_full'] == pytest.approx(m['step_s'] / res['methods']['full']['step_s'])
    # frozen units in bf16: LIFT holds fewer parameter bytes than full fine-tuning, which has no frozen unit
    assert lift['memory']['params'] < res['methods']['full']['memory']['params']
    assert res['methods']['full']['memory']['params'] == 4 * sum(p.numel() for p in _bert().parameters())


def test_plain_truncation_keeps_fp32_parameters():
    r = bench_method(_bert, 'lift', seq_len=16, steps=1, warmup=0, frozen_dtype=None, lower_bound=False)
    assert r['memory']['params'] == 4 * sum(p.numel() for p in _bert().parameters())
    assert 'lower_bound_step_s' not in r and len(r['blocks']) == 3


def test_int8_prefix_in_the_bench():
    "`bench(prefix_int8=True)`: recorded, named in the table's header; full fine-tuning has no prefix, LIFT's blocks above the bottom do."
    from lift_nb.bench import bench_table
    res = bench(_bert, methods=('full', 'lift'), seq_len=16, steps=1, warmup=0, progress=False, prefix_int8=True)
    assert res['prefix_int8'] is True and res['frozen_dtype'] == 'fp32' and res['asked']['frozen_dtype'] == 'fp32'
    assert '(prefix in int8)' in bench_table(res).splitlines()[0]
    assert len(res['methods']['lift']['blocks']) == 3


def test_frozen_eval_in_the_bench():
    "`bench(frozen_eval=True)`: recorded and named in the header; the lower bound's forward keeps the frozen units in eval mode."
    from lift_nb.bench import bench_table, time_forward
    res = bench(_bert, methods=('full', 'lift'), seq_len=16, steps=1, warmup=0, progress=False, frozen_eval=True)
    assert res['frozen_eval'] is True and 'and eval mode' in bench_table(res).splitlines()[0]
    assert all('lower_bound_s' in r for r in res['methods']['lift']['blocks'])
    m = _bert().train(); m.bert.encoder.layer[0].eval()  # time_forward(train=None) runs the modes as they are, and restores them
    seen = []
    m.bert.encoder.layer[0].output.dropout.register_forward_pre_hook(lambda mod, a: seen.append(mod.training))
    m.bert.encoder.layer[1].output.dropout.register_forward_pre_hook(lambda mod, a: seen.append(mod.training))
    x = torch.randint(4, 128, (2, 8))
    time_forward(m, dict(input_ids=x, labels=torch.tensor([0, 1])), repeats=1, train=None)
    assert seen == [False, True] * 2 and m.training and not m.bert.encoder.layer[0].training


def test_targets_say_met_or_missed_from_the_figures():
    m = lambda s, mem: dict(step_s=s, peak_memory_bytes=mem)
    res = dict(model='llama-small', dtype='fp32', methods=dict(full=m(1.0, 300), lift={**m(0.5, 90), 'ratio_to_lower_bound': 1.1,
               'lower_bound_step_s': 0.45}, lora=m(0.6, 100)))
    t = {r['target']: r for r in bench_targets(res)}
    assert t['LIFT throughput / full']['value'] == 2.0 and not t['LIFT throughput / full']['met']  # 2.6x asked of LLaMA
    assert t['LIFT throughput / LoRA']['value'] == 1.2 and not t['LIFT throughput / LoRA']['met']
    assert t['LIFT peak memory / full (fp32)']['met'] and t['LIFT peak memory / LoRA']['met']
    assert t['LIFT step / lower bound']['met']
    gpt2 = {r['target']: r for r in bench_targets({**res, 'model': 'gpt2-small'})}
    assert gpt2['LIFT throughput / full']['met'] and gpt2['LIFT throughput / LoRA']['met']  # 2.0x and 1.2x for GPT-2
    assert 'MISSED' in targets_table(bench_targets(res))


def test_loops_side_by_side_on_a_tiny_model(tmp_path):
    "compare_loops runs Trainer (full, LoRA, LiftCallback) and lift-nb train (full, lora, lift) on the same data and pairs them."
    from lift_nb.bench import compare_loops, loops_table
    from lift_nb.data import word_tokenizer
    word_tokenizer('good great fine bad awful poor the film was a very plot'.split()).save_pretrained(tmp_path / 'bert')
    tiny_model('bert', 'classification', n_layers=2, vocab=32).save_pretrained(tmp_path / 'bert')
    r = compare_loops(str(tmp_path / 'bert'), steps=2, batch_size=4, seq_len=16, rounds=1, threads=1, progress=False,
                      extra={'lift-nb train --method lift --frozen_eval': ('lift', ['--frozen_eval'])})
    assert list(r['ms_per_step']) == ['Trainer full', 'Trainer + peft LoRA', 'Trainer + LiftCallback', 'lift-nb train --method full',
                                      'lift-nb train --method lora', 'lift-nb train --method lift', 'lift-nb train --method lift --frozen_eval']
    assert all(v > 0 for v in r['ms_per_step'].values()) and r['cpu_capability'] == 'AVX2'
    table = loops_table(r)
    assert 'vs its Trainer counterpart' in table and len(table.splitlines()) == 9
