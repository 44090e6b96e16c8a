"`lift-nb train` and the method flags, end to end on files (a word-level tokenizer built in memory, tiny models)."
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lift_nb.blocks import tiny_model
from lift_nb.memory import predict_memory
from lift_nb.schedule import make_schedule

LIFT_NB = str(Path(sys.executable).parent / 'lift-nb')
POS, NEG, FILL = 'good great fine'.split(), 'bad awful poor'.split(), 'the film was a very plot'.split()


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    from lift_nb.data import word_tokenizer
    d = tmp_path_factory.mktemp('work')
    fast = word_tokenizer(POS + NEG + FILL, specials=('[PAD]', '[UNK]'), pad_token=None)  # no pad token: the command must set one
    for name, mt, task in (('bert', 'bert', 'classification'), ('gpt2', 'gpt2', 'classification'), ('gpt2lm', 'gpt2', 'causal-lm')):
        fast.save_pretrained(d / name)
        m = tiny_model(mt, task, n_layers=2, vocab=16)
        m.config.pad_token_id = None  # as the real GPT-2's config
        m.save_pretrained(d / name)
    import random
    r = random.Random(0)
    with open(d / 'train.csv', 'w', newline='') as f:
        w = csv.writer(f); w.writerow(['text', 'label'])
        for i in range(64): w.writerow([' '.join(r.sample(FILL, 3) + [r.choice(POS if i % 2 else NEG)]), ['neg', 'pos'][i % 2]])
    with open(d / 'lm.jsonl', 'w') as f:
        for i in range(32): f.write(json.dumps(dict(text=' '.join(r.sample(FILL + POS, 6)))) + '\n')
    return d


def _train(work, *extra, model='bert'):
    out = work / f'out-{abs(hash(extra)) % 10**8}'
    r = subprocess.run([LIFT_NB, 'train', '--model_name_or_path', str(work / model), '--train_file', str(work / 'train.csv'),
                        '--label_column', 'label', '--max_steps', '8', '--per_device_train_batch_size', '8', '--learning_rate', '1e-2',
                        '--output_dir', str(out), '--no_progress', *extra], capture_output=True, text=True)
    return r, out


def test_schedule_names_with_digits_parse(work):
    for name in ('front2end', 'end2front', 'random', '2,1'):
        r, out = _train(work, '--method', 'lift', '--schedule', name)
        assert r.returncode == 0, r.stderr[-500:]
        assert json.loads((out / 'metrics.json').read_text())['method_options']['schedule'] == (name if ',' not in name else [2, 1])


def test_gpt2_classifier_gets_a_pad_token_and_metrics_without_validation(work):
    r, out = _train(work, '--method', 'freeze-bottom', model='gpt2')
    assert r.returncode == 0, r.stderr[-500:]
    m = json.loads((out / 'metrics.json').read_text())
    assert m['eval_on'] == 'train' and 'eval_accuracy' in m and 'eval_loss' in m
    assert {'train_runtime', 'train_steps_per_second', 'peak_memory_bytes', 'method', 'method_options'} <= set(m)


def test_lora_saves_a_merged_model_with_its_trained_head(work):
    from transformers import AutoModelForSequenceClassification
    r, out = _train(work, '--method', 'lora')
    assert r.returncode == 0, r.stderr[-500:]
    saved = AutoModelForSequenceClassification.from_pretrained(out)
    before = AutoModelForSequenceClassification.from_pretrained(work / 'bert')
    assert not any('lora_' in n for n, _ in saved.named_parameters())
    assert not torch.equal(saved.classifier.weight, before.classifier.weight)  # the head trained and was kept


def test_causal_lm_from_jsonl_without_a_label_column(work):
    out = work / 'lm-out'
    r = subprocess.run([LIFT_NB, 'train', '--model_name_or_path', str(work / 'gpt2lm'), '--train_file', str(work / 'lm.jsonl'),
                        '--max_steps', '4', '--output_dir', str(out), '--no_progress', '--method', 'lift'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-500:]
    m = json.loads((out / 'metrics.json').read_text())
    assert m['eval_on'] == 'train' and m['eval_perplexity'] > 1 and 'eval_accuracy' not in m


@pytest.mark.parametrize('extra,msg', [(('--gradient_accumulation_steps', '0'), 'must be at least 1'),
                                       (('--max_steps', '0'), 'argument --max_steps: must be at least 1'),
                                       (('--eval_steps', '2'), '--eval_steps needs --validation_file')])
def test_bad_numbers_are_refused(work, extra, msg):
    r, _ = _train(work, *extra)
    assert r.returncode == 2 and msg in r.stderr, r.stderr[-300:]


def test_predict_memory_leaves_the_callers_schedule_and_model_alone():
    adt = make_schedule('adt-h', k=2)
    predict_memory(tiny_model('gpt2', n_layers=4), adt, batch_size=2, seq_len=8)
    assert adt.units is None and adt.frozen is None
    model = tiny_model('bert', 'classification', n_layers=2)
    names = {n for n, _ in model.named_parameters()}
    predict_memory(model, 'lora', batch_size=2, seq_len=8)
    assert {n for n, _ in model.named_parameters()} == names
