"""TRL's `SFTTrainer` with `LiftCallback` (issue #18): one block at a time, the backward pass stopping at it, and an
interrupted run that resumes from its checkpoint to the very same weights."""
import os

import pytest
import torch

trl = pytest.importorskip('trl')  # in the dev extras
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback
from transformers.trainer_callback import PrinterCallback

from lift_nb.data import word_tokenizer
from lift_nb.hf import LiftCallback

NUMS = 'one two three four five six'.split()
ROWS = [dict(prompt=f'what is {NUMS[i % 3]} plus {NUMS[i // 3 % 3]}', completion=f' {NUMS[i % 3 + i // 3 % 3 + 1]}') for i in range(48)]


def _tok():
    tok = word_tokenizer('what is plus'.split() + NUMS, specials=('[PAD]', '[UNK]', '</s>'))
    tok.eos_token = '</s>'
    return tok


class Watch(TrainerCallback):
    "Per step: which decoder layers changed, and which ran a backward pass."
    def __init__(self, model):
        self.model, self.changed, self.backward, self._calls = model, [], [], set()
        for i, layer in enumerate(model.model.layers):
            layer.register_full_backward_pre_hook(lambda m, g, i=i: self._calls.add(i))
    def on_step_begin(self, args, state, control, **kw):
        self._before = [torch.cat([p.detach().flatten().clone() for p in l.parameters()]) for l in self.model.model.layers]
        self._calls = set()
    def on_step_end(self, args, state, control, **kw):
        now = [torch.cat([p.detach().flatten() for p in l.parameters()]) for l in self.model.model.layers]
        self.changed.append([i for i, (a, b) in enumerate(zip(self._before, now)) if not torch.equal(a, b)])
        self.backward.append(sorted(self._calls))


def _run(out, resume=None, max_steps=8):
    tok = _tok()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                         intermediate_size=64, pad_token_id=tok.pad_token_id))
    cfg = trl.SFTConfig(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=4, learning_rate=1e-2, use_cpu=True,
                        report_to=[], save_strategy='steps', save_steps=4, logging_strategy='no', disable_tqdm=True, seed=0)
    watch = Watch(model)
    # the two lines that turn an SFT script into LIFT: the callback, passed in
    lift = LiftCallback('lift', schedule='front2end', policy='grouped')
    tr = trl.SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(ROWS), processing_class=tok, callbacks=[lift, watch])
    tr.remove_callback(PrinterCallback)
    tr.train(resume_from_checkpoint=resume)
    return model, watch


def test_sft_trainer_trains_one_block_at_a_time_with_truncation(tmp_path):
    model, watch = _run(tmp_path)
    # 4 blocks over 8 steps, front to end, 2 steps each (grouped); the backward pass never runs below the block
    assert watch.changed == [[0], [0], [1], [1], [2], [2], [3], [3]]
    # backward runs from the loss down through the blocks above the active one, and stops at it
    assert watch.backward == [[0, 1, 2, 3]] * 2 + [[1, 2, 3]] * 2 + [[2, 3]] * 2 + [[3]] * 2
    assert all(p.requires_grad for p in model.parameters())  # the callback removed itself: flags restored


def test_sft_trainer_with_lift_resumes_exactly(tmp_path):
    whole, _ = _run(tmp_path / 'a')
    _run(tmp_path / 'b', max_steps=8)  # writes checkpoint-4 (and -8)
    resumed, watch = _run(tmp_path / 'b', resume=str(tmp_path / 'b' / 'checkpoint-4'))
    assert watch.changed == [[2], [2], [3], [3]]  # the schedule picked up where it stopped
    for (n, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()): assert torch.equal(a, b), n
