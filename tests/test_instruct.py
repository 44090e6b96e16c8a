"""`lift-nb train` on instruction data (issue #18): TRL's dataset formats from jsonl and csv, the loss on completions
only, truncation that says what it cut, the chat-template error, packing, gradient checkpointing; each run in-process."""
import csv
import json

import pytest
import torch

from cli_run import run

NUMS = 'one two three four five six'.split()
WORDS = 'what is plus the sky blue hello hi there yes no'.split() + NUMS
SPECIALS = ('[PAD]', '[UNK]', '</s>', '<|im_start|>', '<|im_end|>', 'user', 'assistant', 'system')


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "A tiny LLaMA with a word-level tokenizer (no chat template) in a folder; prompt-completion and chat data."
    import transformers
    from lift_nb.data import word_tokenizer
    d = tmp_path_factory.mktemp('sft')
    tok = word_tokenizer(WORDS, specials=SPECIALS); tok.eos_token = '</s>'
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=64)
    transformers.LlamaForCausalLM(cfg).save_pretrained(d / 'llama'); tok.save_pretrained(d / 'llama')
    rows = [dict(prompt=f'what is {NUMS[i % 3]} plus {NUMS[i // 3 % 3]}', completion=f' {NUMS[i % 3 + i // 3 % 3 + 1]}') for i in range(24)]
    (d / 'pc.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    with open(d / 'pc.csv', 'w', newline='') as f:
        w = csv.writer(f); w.writerow(['question', 'answer']); w.writerows([r['prompt'], r['completion']] for r in rows)
    chat = [dict(messages=[dict(role='user', content='hello'), dict(role='assistant', content='hi there'),
                           dict(role='user', content=r['prompt']), dict(role='assistant', content=r['completion'].strip())]) for r in rows]
    (d / 'chat.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in chat))
    return d




def train(work, out, data, *extra):
    return ['train', '--model_name_or_path', str(work / 'llama'), '--train_file', str(work / data), '--max_steps', '3',
            '--per_device_train_batch_size', '4', '--learning_rate', '1e-3', '--output_dir', str(out), '--no_progress', *extra]


def test_prompt_completion_jsonl(work, tmp_path, capsys):
    rc, out, err = run(train(work, tmp_path / 'o', 'pc.jsonl', '--validation_file', str(work / 'pc.jsonl')), capsys)
    assert rc == 0, err
    assert 'train (pc.jsonl): 24 examples (prompt-completion, loss on completions only)' in out
    m = json.loads((tmp_path / 'o' / 'metrics.json').read_text())
    assert m['instruction_data']['train'] == dict(format='prompt_completion', completion_only_loss=True, packed=False,
                                                  examples_truncated=0, examples_without_completion=0)
    assert m['task'] == 'causal-lm' and m['eval_loss'] > 0


def test_columns_as_flags_from_csv_and_loss_on_every_token(work, tmp_path, capsys):
    rc, out, err = run(train(work, tmp_path / 'o', 'pc.csv', '--prompt_column', 'question', '--completion_column', 'answer',
                             '--completion_only_loss', 'false'), capsys)
    assert rc == 0, err
    assert 'loss on every token' in out


def test_truncation_says_what_it_cut(work, tmp_path, capsys):
    # 'what is one plus two' is 5 tokens: at --max_seq_length 5 every completion is cut away
    rc, out, err = run(train(work, tmp_path / 'o', 'pc.jsonl', '--max_seq_length', '5'), capsys)
    assert rc == 2 and '--max_seq_length 5: raise it' in err
    rc, out, err = run(train(work, tmp_path / 'o2', 'pc.jsonl', '--max_seq_length', '6'), capsys)
    assert rc == 0 and '24 cut to --max_seq_length' in out  # the completion kept, its end-of-sequence token cut


def test_conversation_needs_a_chat_template(work, tmp_path, capsys):
    rc, out, err = run(train(work, tmp_path / 'o', 'chat.jsonl'), capsys)
    assert rc == 2 and '--chat_template' in err and 'Traceback' not in err
    rc, out, err = run(train(work, tmp_path / 'o', 'chat.jsonl', '--chat_template', str(tmp_path / 'none.jinja')), capsys)
    assert rc == 2 and 'no such file' in err
    (tmp_path / 'chatml.jinja').write_text("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                                           "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    rc, out, err = run(train(work, tmp_path / 'o', 'chat.jsonl', '--chat_template', str(tmp_path / 'chatml.jinja')), capsys)
    assert rc == 0, err
    assert '(conversational, loss on completions only)' in out


def test_packing(work, tmp_path, capsys):
    rc, out, err = run(train(work, tmp_path / 'o', 'chat.jsonl', '--chat_template', 'chatml', '--packing', '--max_seq_length', '64'), capsys)
    assert rc == 0, err
    assert 'packed sequences' in out and 'attention' not in err  # LLaMA keeps attention within each example
    m = json.loads((tmp_path / 'o' / 'metrics.json').read_text())
    assert m['instruction_data']['train']['packed'] is True
    assert json.loads((tmp_path / 'o' / 'config.json').read_text())['use_cache'] is True  # the saved model generates with its cache


def test_gradient_checkpointing_flag(work, tmp_path, capsys):
    rc, out, err = run(train(work, tmp_path / 'o', 'pc.jsonl', '--gradient_checkpointing', '--method', 'lift'), capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / 'o' / 'config.json').read_text())['use_cache'] is True  # trained without it, saved as loaded


def test_instruction_flags_refused_for_a_classifier(work, tmp_path, capsys):
    rc, out, err = run(train(work, tmp_path / 'o', 'pc.jsonl', '--label_column', 'completion', '--packing'), capsys)
    assert rc == 2 and '--packing is for causal-LM fine-tuning' in err
    rc, out, err = run(train(work, tmp_path / 'o', 'pc.jsonl', '--completion_only_loss', 'maybe'), capsys)
    assert rc == 2 and 'expected true or false' in err
