"""Build tutorial 09's small decoder and its data: a LLaMA of about a million weights pretrained on generated facts.

    cd nbs/tutorials/data && python make_tiny_decoder.py     # minutes on two CPU cores; rewrites tiny_decoder/ and facts/

The world: animals, each with a colour, a home and a food, drawn from a seeded generator. The pretraining text states
every fact in several plain sentences; the instruction set asks about some animals in a question-answer format the
pretraining never used; the benchmarks ask about the others, multiple-choice (built like SciQ: a question and four
choices; like PIQA: a goal and two solutions) and exact match (WebQs-style short answers). Fine-tuning has to teach the
format without losing what pretraining put in the weights.
"""
import json
import random
from pathlib import Path

ANIMALS = ('fox bear wolf owl crow frog toad eel crab seal goat hare mole lynx swan duck moth wasp newt vole yak ibis '
           'lark deer mink orca puma boar').split()
COLOURS = 'red brown grey black white green yellow blue'.split()
HOMES = 'forest river desert mountain sea farm cave marsh'.split()
FOODS = 'fish grass seeds nuts worms berries leaves insects'.split()
ATTRS = dict(colour=COLOURS, home=HOMES, food=FOODS)
QUESTIONS = dict(colour='what colour is the {a}?', home='where does the {a} live?', food='what does the {a} eat?')
WORDS = sorted(set(ANIMALS + COLOURS + HOMES + FOODS + 'the a is in lives eats its colour home food of and it what where does '
                   'live eat question answer goal solution find look for give to feed an animal that'.split()))


def world(seed:int=0)->dict:
    "animal -> {colour, home, food}, drawn with `seed`."
    r = random.Random(seed)
    return {a: {k: r.choice(v) for k, v in ATTRS.items()} for a in ANIMALS}


def pretraining_text(w:dict, seed:int=0, n:int=6000)->list:
    "Sentences stating the facts in several plain forms (never in the question-answer format)."
    r = random.Random(seed)
    forms = dict(colour=['the {a} is {v} .', 'its colour is {v} : the {a} .', 'a {v} animal : the {a} .'],
                 home=['the {a} lives in the {v} .', 'in the {v} lives the {a} .', 'the home of the {a} is the {v} .'],
                 food=['the {a} eats {v} .', 'the food of the {a} is {v} .', '{v} : what the {a} eats .'])
    out = []
    for _ in range(n):
        a = r.choice(ANIMALS)
        ks = r.sample(list(ATTRS), r.randint(1, 3))
        out.append(' '.join(r.choice(forms[k]).format(a=a, v=w[a][k]) for k in ks))
    return out


def split(seed:int=0)->tuple:
    "(animals the instruction set asks about, animals the benchmarks ask about)."
    a = list(ANIMALS); random.Random(seed).shuffle(a)
    return sorted(a[:16]), sorted(a[16:])


def instructions(w:dict, animals:list)->list:
    "Prompt-completion pairs: every attribute of every animal in `animals`, as a question and a one-word answer."
    return [dict(prompt=f"Question: {QUESTIONS[k].format(a=a)}\nAnswer:", completion=f" {w[a][k]}") for a in animals for k in ATTRS]


def sciq_like(w:dict, animals:list, seed:int=0)->list:
    "Multiple choice as SciQ: the question, four choices (the right one and three others of its kind)."
    r, out = random.Random(seed), []
    for a in animals:
        for k, vals in ATTRS.items():
            wrong = r.sample([v for v in vals if v != w[a][k]], 3)
            choices = wrong + [w[a][k]]; r.shuffle(choices)
            out.append(dict(context=f"Question: {QUESTIONS[k].format(a=a)}\nAnswer:", choices=choices, label=choices.index(w[a][k])))
    return out


def piqa_like(w:dict, animals:list, seed:int=0)->list:
    "Multiple choice as PIQA: a goal and two solutions, one of them right."
    r, out = random.Random(seed), []
    for a in animals:
        other = r.choice([h for h in HOMES if h != w[a]['home']])
        sols = [f"look in the {w[a]['home']}", f"look in the {other}"]; r.shuffle(sols)
        out.append(dict(context=f"Goal: find the {a}.\nSolution:", choices=sols, label=sols.index(f"look in the {w[a]['home']}")))
        otherf = r.choice([f for f in FOODS if f != w[a]['food']])
        sols = [f"give it {w[a]['food']}", f"give it {otherf}"]; r.shuffle(sols)
        out.append(dict(context=f"Goal: feed the {a}.\nSolution:", choices=sols, label=sols.index(f"give it {w[a]['food']}")))
    return out


def exact_match(w:dict, animals:list)->list:
    "Short-answer questions (WebQs-style): the question and its one acceptable answer."
    return [dict(question=QUESTIONS[k].format(a=a), answers=[w[a][k]]) for a in animals for k in ATTRS]


def write_jsonl(path:Path, rows:list):
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))


def main(out:Path=Path(__file__).parent, steps:int=2000, seed:int=0):
    import torch, transformers
    from lift_nb.qa import byte_tokenizer
    from lift_nb.train import LayerwiseTrainer, TrainArgs
    transformers.utils.logging.set_verbosity_error()
    w = world(seed)
    tune, held = split(seed)
    facts = out / 'facts'; facts.mkdir(exist_ok=True)
    (facts / 'world.json').write_text(json.dumps(w, indent=1))
    write_jsonl(facts / 'instructions.jsonl', instructions(w, tune))
    write_jsonl(facts / 'instructions_dev.jsonl', instructions(w, held))
    write_jsonl(facts / 'sciq_like.jsonl', sciq_like(w, held, seed))
    write_jsonl(facts / 'piqa_like.jsonl', piqa_like(w, held, seed))
    write_jsonl(facts / 'exact_match.jsonl', exact_match(w, held))
    tok = byte_tokenizer(WORDS + ['Question', 'Answer', 'Goal', 'Solution', 'Question:', 'Answer:'])
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=128, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=256, max_position_embeddings=128, bos_token_id=tok.bos_token_id,
                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(cfg)
    text = pretraining_text(w, seed)
    ex = [dict(input_ids=tok(t)['input_ids'] + [tok.eos_token_id]) for t in text]
    t = LayerwiseTrainer(model, 'full', ex, TrainArgs(max_steps=steps, batch_size=32, learning_rate=3e-3, warmup_steps=100, seed=seed, frozen_dtype='fp32', progress=False),
                         pad_id=tok.pad_token_id)
    m = t.fit(); t.close()
    print(f"pretrained {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M weights, {steps} steps: train loss {m['train_loss']:.3f}")
    model.save_pretrained(out / 'tiny_decoder'); tok.save_pretrained(out / 'tiny_decoder')


if __name__ == '__main__':
    main()
