"""LoRA (peft) through finetuning and unlearning on a tiny model: only the adapted projections change."""
import os

for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"): os.environ[v] = "1"
import torch

from baldro_nb.data import STUDY_SOURCE, QADataset, load_tofu
from baldro_nb.models import get_spec, load_model, load_tokenizer

LORA = dict(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])


def _changed(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return {k for k in sa if not torch.equal(sa[k], sb[k])}


def test_lora_finetune_changes_only_the_adapted_projections(tmp_path):
    from baldro_nb.finetune import finetune
    torch.set_num_threads(1)
    info = finetune("tiny-llama", "full", tmp_path/"ft", source=STUDY_SOURCE, epochs=1, lr=1e-2, batch_size=8,
                    max_rows=16, general=False, lora=LORA, logging_steps=1)
    assert info["lora"] == LORA
    changed = _changed(load_model("tiny-llama"), load_model(str(tmp_path/"ft")))   # the merged model vs its base
    assert changed, "LoRA training changed nothing"
    assert all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed), sorted(changed)
    n_layers = load_model("tiny-llama").config.num_hidden_layers
    assert len(changed) == 2 * n_layers                                           # q and v of every layer


def test_lora_unlearning_trains_only_adapters(tmp_path):
    from baldro_nb.training import unlearn
    torch.set_num_threads(1)
    spec = get_spec("tiny-llama"); tok = load_tokenizer("tiny-llama", spec)
    forget = QADataset([dict(r) for r in load_tofu("forget01", STUDY_SOURCE)][:8], tok, spec.template)
    retain = QADataset([dict(r) for r in load_tofu("retain99", STUDY_SOURCE)][:8], tok, spec.template)
    model = load_model("tiny-llama", lora=LORA)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tr = unlearn(model, tok, forget, retain, "NPO", tmp_path/"run", lr=1e-2, epochs=1, batch_size=4, grad_accum=1)
    assert tr.state.global_step == 2
    after = dict(model.named_parameters())
    moved = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert moved and moved <= trainable, sorted(moved - trainable)
