"""Every architecture in `ARCHS` beyond the blocks and the engine (tests/test_blocks.py, tests/test_freeze.py run those on
each): LoRA finds its targets and trains only adapters and head, and every decoder's sequence-classification head trains
through `lift-nb train --label_column` (the selective-freezing paper's setting: decoder LLMs as classifiers)."""
import csv
import json

import pytest
import torch

from lift_nb.blocks import ARCHS, find_units, tiny_model
from lift_nb.freeze import FreezeEngine, model_loss
from lift_nb.schedule import lora_targets, make_schedule
from cli_run import run

DECODERS = sorted(mt for mt, a in ARCHS.items() if 'causal-lm' in a.tasks and not a.lm_config)  # not BERT-style encoders
WORDS = 'good great fine bad awful poor the film was a very plot'.split()


def test_the_table_has_the_seeds_and_todays_architectures():
    assert {'gemma', 'phi', 'qwen3', 'gemma3_text', 'phi3', 'olmo2', 'modernbert', 'deberta-v2', 'xlm-roberta', 'electra'} <= set(ARCHS)
    assert {'gemma', 'phi', 'qwen3', 'gemma3_text', 'phi3', 'olmo2'} <= set(DECODERS)
    for mt in ('modernbert', 'deberta-v2', 'distilbert'):
        with pytest.raises(ValueError, match='no causal-lm head'): tiny_model(mt, 'causal-lm')


@pytest.mark.parametrize('model_type', sorted(ARCHS))
def test_lora_adapts_the_targets_of_every_architecture(model_type):
    pytest.importorskip('peft')
    model = make_schedule('lora').prepare(tiny_model(model_type, 'classification', n_layers=2))
    targets = lora_targets(model_type)
    adapted = {n.rsplit('.lora_A', 1)[0] for n, _ in model.named_parameters() if '.lora_A.' in n}
    assert adapted and all(n.split('.')[-1] in targets for n in adapted), (targets, sorted(adapted)[:4])
    assert len(adapted) == 2 * len(targets)  # each target in each of the 2 blocks
    units = find_units(model)
    sel = make_schedule('lora').setup(units, 1).trainable(0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = dict(input_ids=torch.randint(3, 128, (2, 10), generator=torch.Generator().manual_seed(0)), labels=torch.tensor([0, 1]))
    with FreezeEngine(model, units) as eng:
        eng.activate(list(sel.units), sel.params)
        opt = eng.make_optimizer(torch.optim.SGD, lr=1e-1)
        model_loss(model, batch).backward(); opt.step()
    head = {id(p) for p in units['head'].parameters()}
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    allowed = {n for n, p in model.named_parameters() if 'lora_' in n or id(p) in head}
    assert any('lora_B' in n for n in changed) and changed <= allowed, sorted(changed - allowed)[:5]


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    from lift_nb.data import word_tokenizer
    d = tmp_path_factory.mktemp('archs')
    import random
    r = random.Random(0)
    with open(d / 'train.csv', 'w', newline='') as f:
        w = csv.writer(f); w.writerow(['text', 'label'])
        for i in range(24): w.writerow([' '.join(r.sample(WORDS[6:], 3) + [r.choice(WORDS[:3] if i % 2 else WORDS[3:6])]), ['neg', 'pos'][i % 2]])
    tok = word_tokenizer(WORDS)
    return d, tok


@pytest.mark.parametrize('model_type', DECODERS)
def test_every_decoder_trains_as_a_classifier_through_the_cli(work, model_type, capsys):
    d, tok = work
    folder = d / model_type
    tok.save_pretrained(folder)
    tiny_model(model_type, 'causal-lm', n_layers=2, vocab=32).save_pretrained(folder)  # a decoder LM, as people download one
    rc, out, err = run(['train', '--model_name_or_path', str(folder), '--train_file', str(d / 'train.csv'), '--label_column', 'label',
                        '--method', 'lift', '--max_steps', '4', '--per_device_train_batch_size', '8', '--learning_rate', '1e-3',
                        '--output_dir', str(d / f'out-{model_type}'), '--no_progress', '--seed', '0'], capsys)
    assert rc == 0, err[-800:]
    m = json.loads((d / f'out-{model_type}' / 'metrics.json').read_text())
    assert m['method'] == 'lift' and 'eval_accuracy' in m and 'eval_loss' in m
    from transformers import AutoModelForSequenceClassification
    saved = AutoModelForSequenceClassification.from_pretrained(d / f'out-{model_type}')
    assert saved.config.model_type == model_type and saved.config.num_labels == 2 and saved.config.pad_token_id is not None
