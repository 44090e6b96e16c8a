"""`lift-nb eval` and `lift-nb train --eval_task` (issue #18): the figures of `lift_nb.qa` from the command line, from a
saved model, and at each evaluation of a training run alongside eval_loss."""
import json

import pytest
import torch
import transformers

from cli_run import run
from lift_nb.qa import byte_tokenizer, exact_match_eval, multiple_choice_eval

WORDS = "the a cat sat on mat dog ran to Paris is capital of France Question where what Answer".split()
MC = [dict(context="the cat sat on the", choices=["mat", "dog that ran to Paris"], label=0),
      dict(context="Paris is the capital of", choices=["France", "the dog", "a mat"], label=0),
      dict(context="a dog ran to", choices=["the mat", "Paris", "France"], label=1),
      dict(context="Question: where is Paris?\nAnswer:", choices=["France", "on the mat"], label=0)]
QA = [dict(question="where is Paris?", answers=["France"]), dict(question="what sat on the mat?", answers=["the cat"])]


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp('qa')
    tok = byte_tokenizer(WORDS)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=128)
    transformers.LlamaForCausalLM(cfg).save_pretrained(d / 'llama'); tok.save_pretrained(d / 'llama')
    (d / 'mc.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in MC))
    (d / 'qa.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in QA))
    (d / 'pc.jsonl').write_text(''.join(json.dumps(dict(prompt=r['context'], completion=' ' + r['choices'][r['label']])) + '\n' for r in MC * 4))
    return d




def test_eval_multiple_choice_equals_python(work, tmp_path, capsys):
    rc, out, err = run(['eval', '--model_name_or_path', str(work / 'llama'), '--task', 'multiple_choice', '--data_file',
                        str(work / 'mc.jsonl'), '--no_progress', '--json', str(tmp_path / 'r.json')], capsys)
    assert rc == 0, err
    assert 'multiple_choice on mc.jsonl (4 examples): acc ' in out
    got = json.loads((tmp_path / 'r.json').read_text())
    model = transformers.AutoModelForCausalLM.from_pretrained(work / 'llama')
    ref = multiple_choice_eval(model, transformers.AutoTokenizer.from_pretrained(work / 'llama'), MC)
    assert {k: got[k] for k in ('acc', 'acc_norm', 'acc_bytes', 'n')} == ref


def test_eval_exact_match(work, tmp_path, capsys):
    rc, out, err = run(['eval', '--model_name_or_path', str(work / 'llama'), '--task', 'exact_match', '--data_file',
                        str(work / 'qa.jsonl'), '--max_new_tokens', '4', '--no_progress', '--json', str(tmp_path / 'r.json')], capsys)
    assert rc == 0, err
    got = json.loads((tmp_path / 'r.json').read_text())
    model = transformers.AutoModelForCausalLM.from_pretrained(work / 'llama')
    assert got['exact_match'] == exact_match_eval(model, transformers.AutoTokenizer.from_pretrained(work / 'llama'), QA, max_new_tokens=4)['exact_match']


def test_eval_refuses_bad_data_in_one_line(work, tmp_path, capsys):
    bad = tmp_path / 'bad.jsonl'
    bad.write_text(json.dumps(dict(context='a', choices=['b', 'c'], label=5)) + '\n')
    rc, out, err = run(['eval', '--model_name_or_path', str(work / 'llama'), '--task', 'multiple_choice', '--data_file', str(bad)], capsys)
    assert rc == 2 and 'line 1' in err and 'Traceback' not in err


def test_train_with_eval_task(work, tmp_path, capsys):
    out_dir = tmp_path / 'o'
    rc, out, err = run(['train', '--model_name_or_path', str(work / 'llama'), '--train_file', str(work / 'pc.jsonl'),
                        '--validation_file', str(work / 'pc.jsonl'), '--max_steps', '4', '--eval_steps', '2',
                        '--per_device_train_batch_size', '4', '--learning_rate', '1e-3', '--output_dir', str(out_dir), '--no_progress',
                        '--eval_task', 'multiple_choice', '--eval_task_file', str(work / 'mc.jsonl')], capsys)
    assert rc == 0, err
    m = json.loads((out_dir / 'metrics.json').read_text())
    assert {'eval_loss', 'eval_acc', 'eval_acc_norm', 'eval_acc_bytes'} <= set(m)
    evals = [json.loads(l) for l in (out_dir / 'history.jsonl').read_text().splitlines() if 'eval_acc' in l]
    assert [e['step'] for e in evals] == [2, 4] and all('eval_loss' in e for e in evals)
    model = transformers.AutoModelForCausalLM.from_pretrained(out_dir)  # the saved model scores as the run's last evaluation did
    ref = multiple_choice_eval(model, transformers.AutoTokenizer.from_pretrained(out_dir), MC)
    assert m['eval_acc'] == ref['acc'] and m['eval_acc_norm'] == ref['acc_norm']


def test_eval_task_flags_go_together(work, tmp_path, capsys):
    rc, out, err = run(['train', '--model_name_or_path', str(work / 'llama'), '--train_file', str(work / 'pc.jsonl'),
                        '--output_dir', str(tmp_path / 'o'), '--eval_task', 'multiple_choice'], capsys)
    assert rc == 2 and 'give both' in err
