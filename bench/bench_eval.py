"""Wall time and forward-pass count of the full TOFU-mini evaluation (forget01 + retain + ra + wf) of the tiny target.

    python bench/bench_eval.py [--model tiny-llama] [--batch-size 32] [--threads 2]

Uses the finetuned tiny target (`baldro_nb.finetune.ensure_tiny_finetuned`) when that module exists, else the random
base model (then generation runs to max_new_tokens on every prompt: the worst case). Prints numbers; asserts nothing
about time (target: <= 60 s on 2 cores).

    python bench/bench_eval.py --source tofu-mini:40 --threads 1 --repeat 3 --compare-share

`--compare-share` evaluates with the literal scorer and with the shared-prompt one (`share_prompts=True`: each
question's prompt runs once for its answer, paraphrase and perturbations), interleaved, and prints the ratios
shared / literal of the scoring and of the whole evaluation, and the largest difference of a summary metric.
"""
import argparse, os, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"): os.environ[v] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def target_model_dir(name):
    "The finetuned tiny target of the embedded study (built once, ~2 min, if not cached)."
    from baldro_nb.data import STUDY_SOURCE
    from baldro_nb.finetune import ensure_tiny_finetuned
    return Path(ensure_tiny_finetuned(name, "full", source=STUDY_SOURCE)), f"full (finetuned target, {STUDY_SOURCE})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-llama"); ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2); ap.add_argument("--forget-split", default="forget01")
    ap.add_argument("--max-new-tokens", type=int, default=200); ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--compare-share", action="store_true", help="literal vs shared-prompt scoring, interleaved")
    ap.add_argument("--source", default="tofu-mini", help="evaluation data: tofu-mini (200 authors: TOFU's sizes, "
                    "forget01 40 + retain_perturbed 400 + ra 106 + wf 110) or tofu-mini:40 (the study's)")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    from baldro_nb.models import get_spec, load_model, load_tokenizer
    from baldro_nb.evaluation import evaluate_tofu
    path, what = target_model_dir(a.model)
    tok = load_tokenizer(str(path)); model = load_model(str(path)).eval()
    calls = {"n": 0}
    model.get_decoder().register_forward_hook(lambda m, i, o: calls.__setitem__("n", calls["n"] + 1))
    print(f"model {a.model} [{what}], data {a.source}: {a.forget_split} + retain + ra + wf, batch {a.batch_size}, {a.threads} threads, "
          f"max_new_tokens {a.max_new_tokens}", flush=True)
    modes = (False, True) if a.compare_share else (False,)
    times = {m: [] for m in modes}; sums = {}
    for r in range(a.repeat):
        for share in modes:
            calls["n"] = 0; stats2 = {}; t0 = time.time()
            _, summary = evaluate_tofu(model, tok, get_spec(a.model).template, source=a.source, forget_split=a.forget_split,
                                       batch_size=a.batch_size, max_new_tokens=a.max_new_tokens, stats=stats2,
                                       share_prompts=share)
            times[share].append((time.time() - t0, stats2["score_s"])); sums[share] = summary
            print(f"evaluation {r + 1}{' shared prompts' if share else ''}{' (incl. loading + tokenising TOFU-mini)' if r == 0 and not share else ''}: "
                  f"{time.time() - t0:.1f} s [encode {stats2['encode_s']:.1f} s, score {stats2['score_s']:.1f} s, "
                  f"generate {stats2['generate_s']:.1f} s, metrics {stats2['metrics_s']:.1f} s]", flush=True)
    if a.compare_share and a.repeat > 1:   # the first repetition tokenises: ratios over the later ones
        med = lambda xs: sorted(xs)[len(xs) // 2]
        for i, what in ((1, "scoring"), (0, "evaluation")):
            print(f"shared / literal, {what}: {med([t[i] for t in times[True][1:]]) / med([t[i] for t in times[False][1:]]):.2f} "
                  f"(medians of repetitions 2..{a.repeat})")
        print("largest |difference| of a summary metric:", max(abs(sums[True][k] - sums[False][k]) for k in sums[False]))
    print(f"sequences scored: {stats2['n_sequences']} in {stats2['n_score_forward']} forward passes; "
          f"prompts generated: {stats2['n_prompts']} in {stats2['n_generate_calls']} generate calls; "
          f"decoder forward passes in total (scoring + every generation step): {calls['n']}")
    print("summary:", {k: round(v, 4) for k, v in summary.items()})


if __name__ == "__main__":
    main()
