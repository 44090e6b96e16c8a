"""lift_nb.qa agrees with lm-evaluation-harness: the same local data as an lm-eval custom task, the same tiny model
instance and tokenizer through lm-eval's HFLM; the same acc, acc_norm and acc_bytes, the same log-likelihood for every
choice, and the same greedy answers. Offline: lm-eval reads the jsonl with the `datasets` json builder."""
import json
import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch
import transformers

import lm_eval  # a dev requirement
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from lift_nb.qa import (byte_tokenizer, choice_loglikelihoods, exact_match_eval, generate_answers, multiple_choice_eval,
                        read_exact_match)

transformers.utils.logging.set_verbosity_error()
logging.getLogger("lm_eval").setLevel(logging.ERROR)

WORDS = "the a cat sat on mat dog ran to Paris is capital of France Question where what Answer".split()
SEED = 0  # under this seed the tiny model's acc, acc_norm and acc_bytes all differ on EXAMPLES (checked below)
EXAMPLES = [  # contexts with and without trailing spaces or a newline, empty, starting with the BOS text; 2 to 4 choices;
    # long right choices (acc_norm differs from acc) and 'cafe' / 'café' (4 characters each, 4 and 5 bytes: acc_bytes differs)
    dict(context="the cat sat on the", choices=["mat", "dog that ran to Paris", "café"], label=1),
    dict(context="the dog ran to the ", choices=["cat", "mat"], label=1),
    dict(context="Paris is the capital of", choices=["France", "the dog", "a mat", "Paris"], label=0),
    dict(context="", choices=["the cat sat", "a dog"], label=0),
    dict(context="<s>Question: where is Paris?\nAnswer:", choices=["France", "on the mat"], label=0),
    dict(context="Question: what sat on the mat?\nAnswer:  ", choices=["the cat", "a dog", "Paris"], label=0),
    dict(context="the cat sat in a\n", choices=["cafe", "café"], label=1),
    dict(context="a dog sat on", choices=["the mat", "a cat that ran to the capital"], label=1),
]
QUESTIONS = [dict(question="where is Paris?", answers=["France"]), dict(question="what sat on the mat?", answers=["the cat"]),
             dict(question="what is the capital of France?", answers=["Paris"])]


def tiny(seed=SEED):
    tok = byte_tokenizer(WORDS)
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    return transformers.LlamaForCausalLM(cfg).eval(), tok


@pytest.fixture(scope="module")
def model_tok():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # a model of a few thousand weights: a second thread only adds waiting (much of it on a busy CPU)
    yield tiny()
    torch.set_num_threads(n)


def write_task(tmp_path, name, rows, body):
    "A jsonl of `rows` and an lm-eval task YAML `name` reading it (`body`: the task's own lines)."
    data = tmp_path / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\n"
        f"dataset_kwargs: {{data_files: {{test: '{data}'}}, cache_dir: '{tmp_path / 'hf'}'}}\n"
        f"test_split: test\n" + body, encoding="utf-8")
    return TaskManager(include_path=str(tmp_path), include_defaults=False)


MC_TASK = """output_type: multiple_choice
doc_to_text: "{{context}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{label}}"
metric_list: [{metric: acc}, {metric: acc_norm}, {metric: acc_bytes}]
"""


def harness_mc(tmp_path, model, tok, **hflm):
    "lm-eval's figures and per-choice log-likelihoods on EXAMPLES."
    tm = write_task(tmp_path, "lift_nb_mc", EXAMPLES, MC_TASK)
    out = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tok, **hflm), tasks=["lift_nb_mc"], task_manager=tm,
                                  log_samples=True, bootstrap_iters=0)
    res = out["results"]["lift_nb_mc"]
    samples = sorted(out["samples"]["lift_nb_mc"], key=lambda s: s["doc_id"])
    return ({k: res[f"{k},none"] for k in ("acc", "acc_norm", "acc_bytes")},
            [[r[0] for r in s["filtered_resps"]] for s in samples], [s["arguments"] for s in samples])


def flat(rows): return [v for r in rows for v in r]


def test_multiple_choice_equals_the_harness(tmp_path, model_tok):
    model, tok = model_tok
    theirs, their_lls, args = harness_mc(tmp_path, model, tok, batch_size=3)
    ours = multiple_choice_eval(model, tok, EXAMPLES)
    print("lift_nb", ours, "\nlm-eval", theirs)
    assert ours["n"] == len(EXAMPLES)
    assert {k: ours[k] for k in theirs} == theirs
    assert len({ours["acc"], ours["acc_norm"], ours["acc_bytes"]}) == 3, "the data and seed should tell the three apart"
    assert flat(choice_loglikelihoods(model, tok, EXAMPLES)) == pytest.approx(flat(their_lls), abs=1e-5)
    # the requests the harness made: context, then a space and the choice
    assert [[a[1] for a in doc] for doc in args] == [[" " + c for c in ex["choices"]] for ex in EXAMPLES]


def test_left_truncation_equals_the_harness(tmp_path, model_tok):
    model, tok = model_tok
    theirs, their_lls, _ = harness_mc(tmp_path, model, tok, batch_size=4, max_length=12)
    ours = multiple_choice_eval(model, tok, EXAMPLES, max_length=12, batch_size=2)
    assert {k: ours[k] for k in theirs} == theirs
    lls = choice_loglikelihoods(model, tok, EXAMPLES, max_length=12)
    assert flat(lls) == pytest.approx(flat(their_lls), abs=1e-5)
    assert flat(lls) != pytest.approx(flat(choice_loglikelihoods(model, tok, EXAMPLES)), abs=1e-3)  # the cut changed some figures


GEN_TASK = """output_type: generate_until
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: "{{answers[0]}}"
generation_kwargs: {until: ["\\n"], max_gen_toks: 12, do_sample: false}
metric_list: [{metric: exact_match}]
"""


def test_greedy_answers_equal_the_harness(tmp_path, model_tok):
    model, tok = model_tok
    tm = write_task(tmp_path, "lift_nb_gen", QUESTIONS, GEN_TASK)
    out = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tok, batch_size=2), tasks=["lift_nb_gen"],
                                  task_manager=tm, log_samples=True, bootstrap_iters=0)
    samples = sorted(out["samples"]["lift_nb_gen"], key=lambda s: s["doc_id"])
    theirs = [s["resps"][0][0] for s in samples]
    ours = generate_answers(model, tok, [f"Question: {q['question']}\nAnswer:" for q in QUESTIONS], stop="\n", max_new_tokens=12)
    assert ours == theirs
    assert exact_match_eval(model, tok, read_exact_match(QUESTIONS), max_new_tokens=12) == dict(exact_match=0.0, n=3)
