"""`compat: reference` on the experiment notebook's own parameter path reproduces each of the 15 reference trainers.

For every reference trainer (the original BalDRO code's GradAscent, GradDiff, NPO, SimNPO, SatImp and their Dr*/Group*
variants; the fork's WGA, DrWGA, TNPO, DrTNPO) the test writes that trainer's `compute_loss` out again below, in the
reference's own structure (per-sequence sums from an unreduced cross-entropy, `model(**inputs).loss` for the token
mean, `-b * log(mean(exp(-L / b)))` for DV, top-k by `-avg NLL` then `randperm` for groups), runs it in float64 on a
small random Llama, and compares loss and gradient on one batch with what `method_from_params` (the function the
unlearn notebook calls with its parameters) + `unlearn_loss` compute. The shipped paper and fork grids must resolve
to these trainers.
"""
import copy
import os

for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"): os.environ[v] = "1"
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from baldro_nb.core import BaldroError
from baldro_nb.data import QACollator
from baldro_nb.training import REFERENCE_TRAINERS, ForgetRetainDataset, LiveRef, RefCache, method_from_params, unlearn_loss

# ----------------------------------------------------------------------------------------------------------------
# The reference trainers, written out again (float64 model; nothing from baldro_nb below this line until the tests)

def batch_nll(model, inputs):                      # per-sequence sum of token NLLs
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    labels = inputs["labels"][..., 1:].contiguous()
    return nn.CrossEntropyLoss(ignore_index=-100, reduction="none")(logits[..., :-1, :].contiguous().transpose(-1, -2), labels).sum(-1)


def hf_loss(model, inputs):                        # what `model(**inputs).loss` returns: the token mean
    return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=inputs["labels"]).loss


def npo_vec(model, ref_model, inputs, beta):
    loss = batch_nll(model, inputs)
    with torch.no_grad(): ref_loss = batch_nll(ref_model, inputs)
    lose_log_ratio = -(loss - ref_loss)
    return -2 / beta * F.logsigmoid(beta * (0.0 - lose_log_ratio))


def simnpo_vec(model, inputs, beta, delta, shifted_count=False):
    labels = inputs["labels"][..., 1:] if shifted_count else inputs["labels"]
    loss = batch_nll(model, inputs) / (labels != -100).sum(-1) - delta
    return -F.logsigmoid(beta * loss) * 2 / beta


def token_losses(model, inputs):
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    shift_labels = inputs["labels"][..., 1:].contiguous()
    lm = nn.CrossEntropyLoss(ignore_index=-100, reduction="none")(logits[..., :-1, :].contiguous().view(-1, logits.size(-1)), shift_labels.view(-1))
    return lm, shift_labels.view(-1) != -100


def satimp_tokens(model, inputs, beta1, beta2):   # DrSatImp's vector over the batch's valid tokens
    lm, valid = token_losses(model, inputs)
    w = ((-lm).exp().detach()) ** beta1 * (1 - (-lm).exp().detach()) ** beta2
    return -(w * lm)[valid]


def wga_scalar(model, inputs, beta):
    lm, valid = token_losses(model, inputs)
    return -(((-lm).exp().detach()) ** beta * lm)[valid].mean()


def tnpo_vec(model, ref_model, inputs, beta):     # the fork's TNPO: weight NOT detached, per-sequence token mean
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    shift_labels = inputs["labels"][..., 1:].contiguous(); valid = shift_labels != -100
    ce = nn.CrossEntropyLoss(ignore_index=-100, reduction="none")
    nll = ce(logits[..., :-1, :].contiguous().view(-1, logits.shape[-1]), shift_labels.view(-1)).view(shift_labels.shape)
    with torch.no_grad():
        rl = ref_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        ref_nll = ce(rl[..., :-1, :].contiguous().view(-1, rl.shape[-1]), shift_labels.view(-1)).view(shift_labels.shape)
    pt, pr = torch.exp(-nll) ** beta, torch.exp(-ref_nll) ** beta
    w = 2 * pt / (pt + pr)
    return -(w * nll * valid).sum(-1) / valid.sum(-1).clamp(min=1)


def dv(L, b): return -b * torch.log(torch.mean(torch.exp(-L / b)))


def forget_group(model, inputs, ratio):
    avg = batch_nll(model, inputs) / (inputs["labels"][..., 1:] != -100).sum(-1).clamp(min=1)
    k = max(1, int(avg.size(0) * ratio))
    top = torch.topk(-avg, k=k, largest=True, sorted=False).indices
    return {key: inputs[key].index_select(0, top) for key in ("input_ids", "attention_mask", "labels")}, k


def retain_group(inputs, k, gen):
    idx = torch.randperm(inputs["input_ids"].size(0), generator=gen)[:min(k, inputs["input_ids"].size(0))]
    return {key: inputs[key].index_select(0, idx) for key in ("input_ids", "attention_mask", "labels")}


def reference_loss(name, model, ref_model, f, r, hp, gen):
    "The reference trainer `name`'s compute_loss with hyper-parameters `hp`."
    g, a, b, bdv, ratio = hp.get("gamma", 1.0), hp.get("alpha", 1.0), hp.get("beta"), hp.get("beta_dv"), hp.get("ratio", 0.5)
    if name == "GradAscent": return -hf_loss(model, f)
    if name == "GradDiff": return g * -hf_loss(model, f) + a * hf_loss(model, r)
    if name == "NPO": return g * npo_vec(model, ref_model, f, b).mean() + a * hf_loss(model, r)
    if name == "DrNPO": return g * dv(npo_vec(model, ref_model, f, b), bdv) + a * batch_nll(model, r).mean()
    if name == "GroupNPO":
        fs, k = forget_group(model, f, ratio)
        return g * npo_vec(model, ref_model, fs, b).mean() + a * hf_loss(model, retain_group(r, k, gen))
    if name == "SimNPO": return g * simnpo_vec(model, f, b, hp["delta"]).mean() + a * hf_loss(model, r)
    if name == "DrSimNPO": return g * dv(simnpo_vec(model, f, b, hp["delta"]), bdv) + a * hf_loss(model, r)
    if name == "GroupSimNPO":
        fs, k = forget_group(model, f, ratio)
        return g * simnpo_vec(model, fs, b, hp["delta"], shifted_count=True).mean() + a * hf_loss(model, retain_group(r, k, gen))
    if name == "SatImp": return g * satimp_tokens(model, f, hp["beta1"], hp["beta2"]).mean() + a * hf_loss(model, r)
    if name == "DrSatImp": return g * dv(satimp_tokens(model, f, hp["beta1"], hp["beta2"]), bdv) + a * batch_nll(model, r).mean()
    if name == "GroupSatImp":
        fs, k = forget_group(model, f, ratio)
        return g * satimp_tokens(model, fs, hp["beta1"], hp["beta2"]).mean() + a * hf_loss(model, retain_group(r, k, gen))
    if name == "WGA": return g * wga_scalar(model, f, b) + a * hf_loss(model, r)
    if name == "DrWGA": return g * dv(wga_scalar(model, f, b), bdv) + a * hf_loss(model, r)
    if name == "TNPO": return g * tnpo_vec(model, ref_model, f, b).mean() + a * hf_loss(model, r)
    if name == "DrTNPO": return g * dv(tnpo_vec(model, ref_model, f, b), bdv) + a * hf_loss(model, r)   # fork@c8be338: token-mean retain
    raise KeyError(name)

# ----------------------------------------------------------------------------------------------------------------
# Each trainer: the notebook parameters (objective, reweighting, hyper-parameters) that select it, with values
# away from the defaults where the trainer exposes them, so that a parameter that is dropped on the way shows.

CASES = {
    "GradAscent": ("GradAscent", "mean", {}),
    "GradDiff": ("GradDiff", "mean", dict(alpha=0.7)),
    "NPO": ("NPO", "mean", dict(beta=0.2, gamma=1.0, alpha=1.0)),
    "DrNPO": ("NPO", "dv", dict(beta=0.2, beta_dv=0.5, gamma=1.0, alpha=1.0)),
    "GroupNPO": ("NPO", "group", dict(beta=0.2, ratio=0.5, gamma=1.0, alpha=1.0)),
    "SimNPO": ("SimNPO", "mean", dict(beta=3.5, delta=0.5, gamma=0.125, alpha=1.0)),
    "DrSimNPO": ("SimNPO", "dv", dict(beta=3.5, delta=0.5, beta_dv=0.05, gamma=0.125, alpha=1.0)),
    "GroupSimNPO": ("SimNPO", "group", dict(beta=3.5, delta=0.5, ratio=0.5, gamma=0.125, alpha=1.0)),
    "SatImp": ("SatImp", "mean", dict(beta1=2.0, beta2=1.0, gamma=0.1, alpha=1.0)),
    "DrSatImp": ("SatImp", "dv", dict(beta1=2.0, beta2=1.0, beta_dv=0.02, gamma=0.1, alpha=1.0)),
    "GroupSatImp": ("SatImp", "group", dict(beta1=2.0, beta2=1.0, ratio=0.5, gamma=0.1, alpha=1.0)),
    "WGA": ("WGA", "mean", dict(beta=0.5, gamma=1.0, alpha=1.0)),
    "DrWGA": ("WGA", "dv", dict(beta=0.5, beta_dv=2.0, gamma=1.0, alpha=1.0)),
    "TNPO": ("TNPO", "mean", dict(beta=0.3, gamma=1.0, alpha=1.0)),
    "DrTNPO": ("TNPO", "dv", dict(beta=0.3, beta_dv=0.5, gamma=1.0, alpha=1.0)),
}


def _items(n, seed, start):
    g = np.random.default_rng(seed); out = []
    for i in range(n):
        q = g.integers(3, 60, size=int(g.integers(3, 7))).tolist(); a = g.integers(3, 60, size=int(g.integers(3, 9))).tolist() + [1]
        out.append(dict(input_ids=[2] + q + a, labels=[-100] * (1 + len(q)) + a, index=start + i))
    return out


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    start = LlamaForCausalLM(LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                                         pad_token_id=0, eos_token_id=1, bos_token_id=2)).double()
    forget, retain = _items(4, 0, 0), _items(4, 1, 100)
    col = QACollator(0)
    batch = col([ForgetRetainDataset(forget, retain, seed=0)[i] for i in range(4)])
    cache = RefCache.build(start, forget, col)          # the starting model's answer log-probs, as in a real run
    policy = copy.deepcopy(start)
    with torch.no_grad():                               # the policy has moved away from the reference
        for p in policy.parameters(): p.add_(0.3 * torch.randn_like(p))
    return start, policy, batch, cache


def _grads(model, loss):
    model.zero_grad(); loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", REFERENCE_TRAINERS)
def test_reference_trainer_matches_its_port(setup, name):
    start, policy, batch, cache = setup
    objective, reweighting, hp = CASES[name]
    m = method_from_params(objective, reweighting, "reference", "reference", **hp)   # the unlearn notebook's path
    assert m.name == name and m.compat == "reference"
    ref = cache if m.needs_ref else None
    ours, rec = unlearn_loss(policy, m, m.make_reweighting(), batch["forget"], batch["retain"], ref=ref, pad_id=0,
                             gen=torch.Generator().manual_seed(3))
    g_ours = _grads(policy, ours)
    theirs = reference_loss(name, policy, start, batch["forget"], batch["retain"], hp, torch.Generator().manual_seed(3))
    g_ref = _grads(policy, theirs)
    assert abs(ours.item() - theirs.item()) <= 1e-5 * max(1.0, abs(theirs.item())), (name, ours.item(), theirs.item())
    num = sum(((g_ours[k] - g_ref[k]) ** 2).sum() for k in g_ref).sqrt()
    den = sum((g_ref[k] ** 2).sum() for k in g_ref).sqrt()
    assert set(g_ours) == set(g_ref) and den > 0
    assert num / den <= 1e-5, (name, float(num / den))


def test_the_ports_tell_trainers_apart(setup):
    "The comparison above can fail: the corrected flavour differs from the reference where the quirks act."
    start, policy, batch, cache = setup
    for name in ("DrNPO", "DrSatImp", "DrWGA", "TNPO"):
        objective, reweighting, hp = CASES[name]
        m = method_from_params(objective, reweighting, "corrected", "reference", **hp)
        ours, _ = unlearn_loss(policy, m, m.make_reweighting(), batch["forget"], batch["retain"], ref=cache, pad_id=0)
        theirs = reference_loss(name, policy, start, batch["forget"], batch["retain"], hp, torch.Generator().manual_seed(3))
        g1, g2 = _grads(policy, ours), _grads(policy, theirs)
        rel = sum(((g1[k] - g2[k]) ** 2).sum() for k in g2).sqrt() / sum((g2[k] ** 2).sum() for k in g2).sqrt()
        assert rel > 1e-3, name


def test_unrun_combinations_are_refused():
    for objective, reweighting, kw in (("GradAscent", "dv", {}), ("WGA", "group", {}), ("NPO", "dv", dict(direction="softmax")),
                                       ("NPO", "dv", dict(pool="forget_set"))):
        with pytest.raises(BaldroError, match="compat='corrected'"):
            method_from_params(objective, reweighting, "reference", "reference", **kw)


@pytest.mark.parametrize("grid", ["params/paper_tofu.yaml", "params/fork_study.yaml"])
def test_shipped_grids_resolve_to_reference_trainers(grid):
    from baldro_nb.grid import load_runs, run_method
    from baldro_nb.core import repo_root
    runs = [r for r in load_runs(repo_root()/grid) if r["kind"] == "unlearn"]
    assert runs
    names = {run_method(r).name for r in runs}
    assert names <= set(REFERENCE_TRAINERS), names - set(REFERENCE_TRAINERS)
    assert all(run_method(r).compat == "reference" for r in runs)
    if grid.endswith("fork_study.yaml"): assert names == {"NPO", "DrNPO", "TNPO", "DrTNPO", "WGA", "DrWGA"}


def test_reweighting_matrix_runs_on_cpu():
    "bench/reweighting_matrix.py (the GPU check's method matrix) on CPU: every cell finite, weights on the device."
    import importlib.util
    from baldro_nb.core import repo_root
    spec = importlib.util.spec_from_file_location("reweighting_matrix", repo_root()/"bench"/"reweighting_matrix.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    rows = mod.run("cpu", "float32", steps=1, hidden=32)
    assert len(rows) == 7 * 5 + 5 * 2, len(rows)          # 5 cells for every objective, 2 token-level cells for 5 of them
    bad = [r for r in rows if not (r["ok"] and r["weights_on_device"])]
    assert not bad, bad
