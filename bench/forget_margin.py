"""How strongly the tiny target models prefer a forget author's true facts, in two phrasings.

Forget quality compares the unlearned model's truth ratios on the forget set, log10 P(perturbed)/P(paraphrased)
(per-token probabilities, the perturbed answers' losses averaged first, as open-unlearning does), with the retain
model's. TOFU-mini's perturbed answers are the paraphrase with other values from the shared pools, so the ratio isolates
the fact values. This script prints that ratio for each tiny model's target (`full`) and retain (`retain99`) model on
forget01 in

- the paraphrased phrasing (what the metric uses; the models never trained on it), and
- the trained phrasing: the original answer, against the original answer carrying the perturbed answers' values
  (recovered by parsing each paraphrase/perturbation with its QA kind's template, nbs/02_data.ipynb QA_KINDS).

A target far below 0 in the trained phrasing but near 0 in the paraphrased one has learnt the facts but carries them
only partly to a phrasing it never saw.

    python bench/forget_margin.py [tiny-llama tiny-qwen3:1 ...]   # model[:pair]; builds missing tiny models (~1-2 min each)
"""
import re, sys

import numpy as np
import torch

from baldro_nb.data import QA_KINDS, STUDY_SOURCE, encode_qa, load_tofu
from baldro_nb.finetune import ensure_tiny_finetuned
from baldro_nb.models import get_spec, load_model, load_tokenizer


def _pattern(template: str, **fixed) -> re.Pattern:
    "A regex for `template` with one group per field; `fixed` fields (the author's name) as literal text."
    parts = re.split(r"\{(\w+)\}", template)   # literal, field, literal, field, ...
    rx = "".join(re.escape(p) if i % 2 == 0 else re.escape(fixed[p]) if p in fixed else f"(?P<{p}>.+?)"
                 for i, p in enumerate(parts))
    return re.compile(rx + r"\Z")


def trained_phrasing(row) -> tuple[str, list[str]]:
    "(the original answer, the original answer with each perturbed answer's values)."
    for _, q, _, ans, pans in QA_KINDS:
        m = _pattern(q).match(row["question"])
        if m is None: continue
        P = _pattern(pans, name=m["name"])
        para = P.match(row["paraphrased_answer"]).groupdict()
        assert ans.format(name=m["name"], **para) == row["answer"], (ans, para, row["answer"])
        return row["answer"], [ans.format(name=m["name"], **P.match(p).groupdict()) for p in row["perturbed_answer"]]
    raise ValueError(f"no QA kind matches {row['question']!r}")


@torch.no_grad()
def avg_loss(model, tok, template, question: str, answer: str) -> float:
    e = encode_qa(tok, template, question, answer)
    ids = torch.tensor([e["input_ids"]]); lab = torch.tensor([e["labels"]])
    logits = model(input_ids=ids).logits[0, :-1].float()
    return torch.nn.functional.cross_entropy(logits, lab[0, 1:], ignore_index=-100).item()


def log10_ratios(model_name: str, stage: str, rows, pair: int = 0) -> tuple[np.ndarray, np.ndarray]:
    spec = get_spec(model_name)
    d = ensure_tiny_finetuned(model_name, stage, pair, source=STUDY_SOURCE)
    model, tok = load_model(d).eval(), load_tokenizer(d, spec)
    para, trained = [], []
    for r in rows:
        L = lambda a: avg_loss(model, tok, spec.template, r["question"], a)
        para.append(L(r["paraphrased_answer"]) - np.mean([L(p) for p in r["perturbed_answer"]]))
        ans, perts = trained_phrasing(r)
        trained.append(L(ans) - np.mean([L(p) for p in perts]))
    return np.array(para) / np.log(10), np.array(trained) / np.log(10)


if __name__ == "__main__":
    torch.set_num_threads(1)
    rows = list(load_tofu("forget01_perturbed", STUDY_SOURCE))
    print(f"forget01_perturbed of {STUDY_SOURCE}: {len(rows)} rows; mean log10 P(pert)/P(true) (share of rows > 0)")
    print(f"{'model':14s} {'stage':9s} {'paraphrased phrasing':>22s} {'trained phrasing':>18s}")
    for arg in sys.argv[1:] or ["tiny-llama"]:
        m, _, k = arg.partition(":")   # model[:pair]
        for st in ("full", "retain99"):
            p, t = log10_ratios(m, st, rows, int(k or 0))
            print(f"{arg:14s} {st:9s} {p.mean():+14.3f} ({(p > 0).mean():4.0%}) {t.mean():+10.3f} ({(t > 0).mean():4.0%})")
