"""GPT-2: KL scores equal physical removal, pruning equals physical removal, stock reload with the tie kept.

The float64 reference below is a GPT-2 forward written from scratch over a state dict: it accepts any
residual width and any attention width (which stock GPT-2 ties together), so physically removing a residual
channel, or attention dims without changing the attention scale, can be evaluated honestly.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import kl_from_logits, random_scores, top_sorted
from tiny import gpt2_config, randomize, tiny_tokenizer, token_batches, word_corpus
from transformers import (
    AutoModelForCausalLM,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    GPT2Model,
)

from upvit_hf import ImportanceScores, PruningTarget, UPPruner
from upvit_hf.adapters import adapter_for
from upvit_hf.scoring import exact

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ float64 reference model
def gelu_new(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def original_scales(config) -> list[float]:
    """The attention scale of each layer of the *unpruned* model."""
    head_dim = config.n_embd // config.n_head
    base = head_dim**-0.5 if config.scale_attn_weights else 1.0
    return [base / (i + 1) if config.scale_attn_by_inverse_layer_idx else base for i in range(config.n_layer)]


def forward(state, config, batch, scales, kind="lm"):
    """GPT-2 in float64 from a state dict (keys as in GPT2LMHeadModel / GPT2ForSequenceClassification); `kind`
    picks the output: "lm" logits, "cls" sequence-classification logits, "base" the final hidden states.

    The residual width is read from `wte`, the attention width from `c_attn`; heads = config.n_head.
    """
    s = {k: v.double() for k, v in state.items()}
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    n, t = ids.shape
    heads = config.n_head
    eps = config.layer_norm_epsilon
    h = s["transformer.wte.weight"][ids] + s["transformer.wpe.weight"][torch.arange(t)]
    allowed = torch.ones(t, t, dtype=torch.bool).tril()[None, None] & mask[:, None, None, :]
    for i, scale in enumerate(scales):
        p = f"transformer.h.{i}."
        x = F.layer_norm(h, h.shape[-1:], s[p + "ln_1.weight"], s[p + "ln_1.bias"], eps)
        qkv = x @ s[p + "attn.c_attn.weight"] + s[p + "attn.c_attn.bias"]
        width = qkv.shape[-1] // 3
        q, k, v = (qkv[..., j * width : (j + 1) * width].view(n, t, heads, -1).transpose(1, 2) for j in range(3))
        logits = (q @ k.transpose(-1, -2)) * scale
        att = torch.softmax(logits.masked_fill(~allowed, -torch.inf), -1)
        out = (att @ v).transpose(1, 2).reshape(n, t, width)
        h = h + out @ s[p + "attn.c_proj.weight"] + s[p + "attn.c_proj.bias"]
        x = F.layer_norm(h, h.shape[-1:], s[p + "ln_2.weight"], s[p + "ln_2.bias"], eps)
        inner = gelu_new(x @ s[p + "mlp.c_fc.weight"] + s[p + "mlp.c_fc.bias"])
        h = h + inner @ s[p + "mlp.c_proj.weight"] + s[p + "mlp.c_proj.bias"]
    h = F.layer_norm(h, h.shape[-1:], s["transformer.ln_f.weight"], s["transformer.ln_f.bias"], eps)
    if kind == "base":
        return h  # GPT2Model's last_hidden_state
    if kind == "lm":
        return h @ s["transformer.wte.weight"].T  # the tied head
    last = (torch.arange(t) * (ids != config.pad_token_id)).argmax(-1)
    return h[torch.arange(n), last] @ s["score.weight"].T


def state_of(model):
    return {k: v.detach().double().clone() for k, v in model.state_dict().items()}


# Which axis of each GPT-2 tensor is the residual axis; written independently of the library.
RESIDUAL_AXIS = {
    "wte.weight": 1, "wpe.weight": 1, "lm_head.weight": 1, "score.weight": 1,
    "attn.c_attn.weight": 0, "mlp.c_fc.weight": 0,
    "attn.c_proj.weight": 1, "attn.c_proj.bias": 0, "mlp.c_proj.weight": 1, "mlp.c_proj.bias": 0,
}


def residual_axis(key):
    if ".ln_" in key:
        return 0
    return next((axis for suffix, axis in RESIDUAL_AXIS.items() if key.endswith(suffix)), None)


def without_residual(state, keep):
    return {k: v if residual_axis(k) is None else v.index_select(residual_axis(k), keep) for k, v in state.items()}


def reference_scores(model, batches, kind):
    config = model.config
    state, scales = state_of(model), original_scales(config)
    hidden, inner, layers = config.n_embd, config.n_inner, config.n_layer

    def total(edited):
        return sum(
            kl_from_logits(forward(state, config, b, scales, kind), forward(edited, config, b, scales, kind),
                   b["attention_mask"] if kind == "lm" else None)
            for b in batches
        )

    def zeroed(edits):
        edited = dict(state)
        for key, axis, index in edits:
            edited[key] = edited[key].clone()
            edited[key].select(axis, index).zero_()
        return edited

    residual = [total(without_residual(state, torch.tensor([c for c in range(hidden) if c != ch])))
                for ch in range(hidden)]
    attention, ffn = [], []
    for layer in range(layers):
        p = f"transformer.h.{layer}."
        attention.append([
            total(zeroed([(p + "attn.c_attn.weight", 1, i + o) for o in (0, hidden, 2 * hidden)]
                         + [(p + "attn.c_attn.bias", 0, i + o) for o in (0, hidden, 2 * hidden)]))
            for i in range(hidden)
        ])
        ffn.append([total(zeroed([(p + "mlp.c_proj.weight", 0, j)])) for j in range(inner)])
    return torch.tensor(residual), [torch.tensor(a) for a in attention], [torch.tensor(f) for f in ffn]


def assert_scores_close(scores, reference, rtol):
    residual, attention, ffn = reference
    torch.testing.assert_close(scores.residual, residual.double(), rtol=rtol, atol=0)
    for got, want in zip(scores.attention + scores.ffn, attention + ffn):
        torch.testing.assert_close(got, want.double(), rtol=rtol, atol=0)


# ------------------------------------------------------------------------------ running in pieces
def test_reference_forward_is_gpt2():
    for kind, cls in (("lm", GPT2LMHeadModel), ("cls", GPT2ForSequenceClassification)):
        config = gpt2_config(scale_attn_by_inverse_layer_idx=True)
        model = randomize(cls(config)).double()
        for batch in token_batches(config):
            with torch.no_grad():
                torch.testing.assert_close(forward(state_of(model), config, batch, original_scales(config), kind),
                                           model(**batch).logits, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("cls", [GPT2LMHeadModel, GPT2ForSequenceClassification, GPT2Model])
def test_adapter_pieces_compose_to_the_model(cls, attn):
    config = gpt2_config(attn_implementation=attn)
    model = randomize(cls(config))
    adapter = adapter_for(model)
    batches = token_batches(config)
    first = batches[0]
    extra = dict(first, position_ids=torch.arange(2, 8).expand(3, -1),
                 token_type_ids=torch.ones_like(first["input_ids"]))
    for batch in [*batches, extra, {"input_ids": batches[1]["input_ids"]}]:
        with torch.no_grad():
            hidden, context = adapter.embed(batch)
            for branch in adapter.branches():
                hidden = branch(hidden, context)
            out = model(**batch)
            want = out.last_hidden_state if cls is GPT2Model else out.logits
            torch.testing.assert_close(adapter.readout(hidden, context), want)
    weights = adapter.token_weights(first)
    if cls is GPT2ForSequenceClassification:
        assert weights is None
    else:
        assert torch.equal(weights, first["attention_mask"])
        assert torch.equal(adapter.token_weights({"input_ids": first["input_ids"]}), torch.ones(3, 6))


def test_depth_contract_and_layer_index_scale():
    config = gpt2_config(n_layer=3, scale_attn_by_inverse_layer_idx=True)
    model = randomize(GPT2LMHeadModel(config)).double()
    adapter = adapter_for(model)
    assert adapter.block_prefix(2) == "transformer.h.2."
    assert adapter.blocks() is model.transformer.h
    state = model.state_dict()
    block = {k for k in state if k.startswith("transformer.h.1.")}
    halves = [{k for k in block if k[len("transformer.h.1."):].startswith(p)} for p in adapter.half_block_prefixes]
    assert halves[0] | halves[1] == block and not halves[0] & halves[1]
    assert adapter.layer_index_scale(2, 0) == pytest.approx(1 / 3)
    assert adapter_for(randomize(GPT2LMHeadModel(gpt2_config()))).layer_index_scale(2, 0) == 1.0

    # Drop block 0 by hand: blocks 1, 2 move to indices 0, 1 and keep their attention scale when the
    # factor is folded into their query columns.
    shallow = GPT2LMHeadModel(gpt2_config(n_layer=2, scale_attn_by_inverse_layer_idx=True)).double().eval()
    moved = {}
    for key, value in state.items():
        if key.startswith("transformer.h.0."):
            continue
        if key.startswith("transformer.h."):
            old = int(key.split(".")[2])
            key = key.replace(f"h.{old}.", f"h.{old - 1}.", 1)
            if key.endswith("c_attn.weight") or key.endswith("c_attn.bias"):
                value = value.clone()
                value[..., : config.n_embd] *= adapter.layer_index_scale(old, old - 1)
        moved[key] = value
    shallow.load_state_dict(moved)
    reference_state = {k.replace("h.1.", "h.0.").replace("h.2.", "h.1."): v for k, v in state_of(model).items()}
    batch = token_batches(config)[0]
    with torch.no_grad():
        torch.testing.assert_close(shallow(**batch).logits,
                                   forward(reference_state, config, batch, original_scales(config)[1:]),
                                   rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------ scores
SCORE_CASES = [
    pytest.param(GPT2LMHeadModel, "lm", {}, id="lm-sdpa"),
    pytest.param(GPT2LMHeadModel, "lm", {"attn_implementation": "eager", "scale_attn_by_inverse_layer_idx": True},
                 id="lm-eager-inverse-layer-idx"),
    pytest.param(GPT2ForSequenceClassification, "cls", {}, id="sequence-classification"),
]


@pytest.mark.parametrize("cls, kind, overrides", SCORE_CASES)
def test_float64_scores_equal_physical_removal(cls, kind, overrides):
    model = randomize(cls(gpt2_config(**overrides))).double()
    batches = token_batches(model.config)
    scores = UPPruner(model).score(batches, variants_per_pass=5, show_progress=False)
    assert scores.meta["proxy_size"] == 5
    assert_scores_close(scores, reference_scores(model, batches, kind), rtol=1e-6)


def test_float32_scores_match_float64_reference():
    model = randomize(GPT2LMHeadModel(gpt2_config()))
    batches = token_batches(model.config)
    scores = UPPruner(model).score(batches, variants_per_pass=7, show_progress=False)
    assert_scores_close(scores, reference_scores(model, batches, "lm"), rtol=1e-3)


@pytest.mark.parametrize("cls, budgets", [(GPT2LMHeadModel, (2, 7)), (GPT2ForSequenceClassification, (1,))])
def test_logit_budget_chunking_does_not_change_scores(cls, budgets, monkeypatch):
    """Readout in groups of whole variants (budget 7 samples: 2 variants of 3 samples), and in slices of one
    variant's samples (budget 1 or 2 samples: uneven slices), as for a language model's large logits."""
    model = randomize(cls(gpt2_config(n_layer=1))).double()
    batches = token_batches(model.config, lengths=((6, 4, 5),))
    want = UPPruner(model).score(batches, variants_per_pass=5, show_progress=False)
    per_sample = 6 * model.config.vocab_size if cls is GPT2LMHeadModel else model.config.num_labels
    for samples in budgets:
        monkeypatch.setattr(exact, "LOGITS_BUDGET", samples * per_sample)
        got = UPPruner(model).score(batches, variants_per_pass=5, show_progress=False)
        for a, b in zip([got.residual, *got.attention, *got.ffn], [want.residual, *want.attention, *want.ffn]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=0)


# ------------------------------------------------------------------------------ pruning
def physically_reduced_state(model, scores, hidden, head_dim, inner):
    """Slice every tensor by hand: top residual channels, the top `head_dim` dims of every head, top FFN
    channels. Constants (the attention scale) are untouched: the forward above keeps the original ones."""
    config = model.config
    heads, old_head_dim, width = config.n_head, config.n_embd // config.n_head, config.n_embd
    state = without_residual(state_of(model), top_sorted(scores.residual, hidden))
    for layer in range(config.n_layer):
        p = f"transformer.h.{layer}."
        per_head = scores.attention[layer].view(heads, old_head_dim)
        att = torch.cat([top_sorted(per_head[h], head_dim) + h * old_head_dim for h in range(heads)])
        qkv = torch.cat([att, att + width, att + 2 * width])
        ffn = top_sorted(scores.ffn[layer], inner)
        state[p + "attn.c_attn.weight"] = state[p + "attn.c_attn.weight"][:, qkv]
        state[p + "attn.c_attn.bias"] = state[p + "attn.c_attn.bias"][qkv]
        state[p + "attn.c_proj.weight"] = state[p + "attn.c_proj.weight"][att]
        state[p + "mlp.c_fc.weight"] = state[p + "mlp.c_fc.weight"][:, ffn]
        state[p + "mlp.c_fc.bias"] = state[p + "mlp.c_fc.bias"][ffn]
        state[p + "mlp.c_proj.weight"] = state[p + "mlp.c_proj.weight"][ffn]
    return state


@pytest.mark.parametrize("cls, kind", [(GPT2LMHeadModel, "lm"), (GPT2ForSequenceClassification, "cls"),
                                        (GPT2Model, "base")])
@pytest.mark.parametrize("overrides", [
    {}, {"scale_attn_by_inverse_layer_idx": True, "attn_implementation": "eager"}, {"scale_attn_weights": False},
], ids=["default", "inverse-layer-idx-eager", "unscaled"])
def test_pruning_without_merging_equals_physical_removal(cls, kind, overrides):
    # Stock GPT-2 has head_dim = n_embd // n_head: keeping both heads, 8 → 6 wide means 4 → 3 dims a head.
    # The headless GPT2Model is the `transformer` of an LM, so the reference can read the usual key names.
    full = randomize((GPT2LMHeadModel if cls is GPT2Model else cls)(gpt2_config(**overrides))).double()
    model = full.transformer if cls is GPT2Model else full
    scores = random_scores(model.config)
    small = UPPruner(model).prune(PruningTarget(hidden_size=6, num_attention_heads=2, intermediate_size=7), scores)
    assert type(small) is cls
    assert (small.config.n_embd, small.config.n_head, small.config.n_inner, small.config.n_layer) == (6, 2, 7, 2)
    reference = physically_reduced_state(full, scores, hidden=6, head_dim=3, inner=7)
    for batch in token_batches(model.config):
        with torch.no_grad():
            want = forward(reference, model.config, batch, original_scales(model.config), kind)
            if kind == "base":  # hidden states of real tokens (padded positions are unspecified)
                real = batch["attention_mask"].bool()
                torch.testing.assert_close(small(**batch).last_hidden_state[real], want[real], rtol=1e-10, atol=1e-10)
            else:
                torch.testing.assert_close(small(**batch).logits, want, rtol=1e-10, atol=1e-10)
    if cls is GPT2LMHeadModel:
        assert small.lm_head.weight is small.transformer.wte.weight


@pytest.mark.parametrize("scaled", [True, False])
def test_merged_heads_hold_the_top_dims_of_their_group(scaled):
    model = randomize(GPT2LMHeadModel(gpt2_config(n_head=4, scale_attn_weights=scaled)))
    scores = random_scores(model.config, seed=3)
    small = UPPruner(model).prune(PruningTarget(hidden_size=6, num_attention_heads=2, intermediate_size=12), scores)
    assert (small.config.n_head, small.config.n_embd) == (2, 6)
    res = top_sorted(scores.residual, 6)
    fold = math.sqrt(3 / 2) if scaled else 1.0  # head_dim 2 → 3
    for layer in range(2):
        groups = scores.attention[layer].view(2, 4)  # two merged groups of two 2-dim heads
        kept = torch.cat([top_sorted(groups[g], 3) + 4 * g for g in range(2)])
        old, new = model.transformer.h[layer].attn, small.transformer.h[layer].attn
        w, b = old.c_attn.weight[res], old.c_attn.bias
        torch.testing.assert_close(new.c_attn.weight,
                                   torch.cat([w[:, kept] * fold, w[:, kept + 8], w[:, kept + 16]], 1))
        torch.testing.assert_close(new.c_attn.bias, torch.cat([b[kept] * fold, b[kept + 8], b[kept + 16]]))
        torch.testing.assert_close(new.c_proj.weight, old.c_proj.weight[kept][:, res])
        torch.testing.assert_close(new.c_proj.bias, old.c_proj.bias[res])


FRESH_LOAD = textwrap.dedent("""
    import sys, torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
    batch, prompt = torch.load(sys.argv[2])
    with torch.no_grad():
        logits = model(**batch).logits
        out = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0,
                             output_logits=True, return_dict_in_generate=True)
    torch.save((logits, out.sequences, torch.stack(out.logits, 1)), sys.argv[3])
    assert "upvit_hf" not in sys.modules
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    print(type(model).__name__, model.config.n_embd, model.config.n_head)
""")


def test_pruned_model_reloads_in_a_fresh_interpreter_with_the_tie(tmp_path):
    model = randomize(GPT2LMHeadModel(gpt2_config(n_head=4, scale_attn_by_inverse_layer_idx=True)))
    small = UPPruner(model).prune(PruningTarget(hidden_size=6, num_attention_heads=2, intermediate_size=9),
                                  random_scores(model.config))
    assert small.lm_head.weight.data_ptr() == small.transformer.wte.weight.data_ptr()
    small.save_pretrained(tmp_path / "model")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model" / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()  # saved once, tied on load
    batch = token_batches(model.config)[0]
    prompt = batch["input_ids"][1:, :4]
    torch.save((batch, prompt), tmp_path / "x.pt")
    out = subprocess.run([sys.executable, "-c", FRESH_LOAD, str(tmp_path / "model"), str(tmp_path / "x.pt"),
                          str(tmp_path / "y.pt")], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["GPT2LMHeadModel", "6", "2"]
    logits, generated, step_logits = torch.load(tmp_path / "y.pt")
    assert generated.shape[1] == prompt.shape[1] + 6
    with torch.no_grad():
        torch.testing.assert_close(logits, small(**batch).logits, rtol=0, atol=0)
        # The reloaded model's KV-cached steps equal a full forward of the sequence it generated (values, not
        # tokens: a near-tie could pick another token on another CPU).
        full = small(input_ids=generated, use_cache=False).logits[:, prompt.shape[1] - 1 : -1]
    torch.testing.assert_close(step_logits, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [GPT2LMHeadModel, GPT2Model, GPT2ForSequenceClassification])
def test_models_prune_to_their_class(cls):
    model = randomize(cls(gpt2_config(n_head=4)))
    small = UPPruner(model).prune(PruningTarget(4, 2, 5), random_scores(model.config))
    assert type(small) is cls and (small.config.n_embd, small.config.n_head, small.config.n_inner) == (4, 2, 5)
    assert small.config.upvit_pruning["original"]["hidden_size"] == 8  # values: the physical-removal test above


def test_magnitude_scores_count_the_tied_embedding_once():
    model = randomize(GPT2LMHeadModel(gpt2_config()))
    scores = UPPruner(model).score(method="magnitude")
    state = model.state_dict()
    want = sum(state[k].double().abs().sum(1 - residual_axis(k)) if state[k].dim() == 2 else state[k].double().abs()
               for k in state if residual_axis(k) is not None and k != "lm_head.weight")  # the tie counted once
    torch.testing.assert_close(scores.residual, want)


# ------------------------------------------------------------------------------ bad input
@pytest.fixture(scope="module")
def gpt2():
    return randomize(GPT2LMHeadModel(gpt2_config(n_head=4)))


@pytest.mark.parametrize("target, message", [
    (PruningTarget(6, 4, 12), "ties the attention width"),       # 4 heads do not divide 6
    (PruningTarget(6, 2, 12, head_dim=2), "head_dim"),           # must be 6 // 2
    (PruningTarget(4, 2, 12, head_dim=1), "head_dim"),
    (PruningTarget(6, 3, 12), "must divide"),                    # 3 does not divide 4 heads
    (PruningTarget(9, 1, 12), "exceeds"),
    (PruningTarget(8, 2, 13), "exceeds"),
])
def test_bad_targets_raise(gpt2, target, message):
    with pytest.raises(ValueError, match=message):
        UPPruner(gpt2).prune(target, random_scores(gpt2.config))


def test_unscorable_and_unsupported_gpt2_models_raise(gpt2):
    with pytest.raises(ValueError, match="headless"):
        UPPruner(GPT2Model(gpt2_config())).score(token_batches(gpt2.config), show_progress=False)
    with pytest.raises(ValueError, match="cross"):
        UPPruner(GPT2LMHeadModel(gpt2_config(add_cross_attention=True)))
    with pytest.raises(ValueError, match="missing input_ids"):
        UPPruner(gpt2).score([{"pixel_values": torch.zeros(1, 3)}], show_progress=False)


# ------------------------------------------------------------------------------ examples/prune_gpt2.py
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2") / "tiny-gpt2"
    tokenizer = tiny_tokenizer()
    config = gpt2_config(vocab_size=len(tokenizer), n_head=4)
    randomize(GPT2LMHeadModel(config)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    text = folder.parent / "corpus.txt"
    text.write_text(word_corpus())
    return folder, text


def load_script():
    spec = importlib.util.spec_from_file_location("prune_gpt2", ROOT / "examples" / "prune_gpt2.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    return module


def test_example_prunes_offline_end_to_end(saved_model, tmp_path):
    folder, text = saved_model
    out, scores = tmp_path / "pruned", tmp_path / "scores.safetensors"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    args = [sys.executable, str(ROOT / "examples" / "prune_gpt2.py"), "--model", str(folder), "--dataset", str(text),
            "--proxy-size", "3", "--seq-len", "8", "--batch-size", "2", "--hidden-size", "6", "--num-heads", "2",
            "--intermediate-size", "7", "--variants-per-pass", "8", "--scores", str(scores), "--output", str(out)]
    run = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1])["pruned"]["hidden_size"] == 6
    assert ImportanceScores.load(scores).meta["proxy_size"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned", "scores.safetensors"]  # no temporary left
    small = AutoModelForCausalLM.from_pretrained(out)
    assert (small.config.n_embd, small.config.n_head, small.config.n_inner) == (6, 2, 7)
    assert small.lm_head.weight is small.transformer.wte.weight
    assert (out / "tokenizer.json").exists()

    # Reusing the scores (no data needed) with a --ratio target, in process.
    script = load_script()
    again = tmp_path / "ratio"
    assert script.main(["--model", str(folder), "--dataset", str(tmp_path / "no-such-corpus"), "--scores",
                        str(scores), "--ratio", "0.5", "--output", str(again)]) == 0
    small = AutoModelForCausalLM.from_pretrained(again)
    assert (small.config.n_embd, small.config.n_head, small.config.n_inner) == (4, 2, 6)


@pytest.mark.parametrize("extra, message", [
    (["--ratio", "0.5", "--hidden-size", "4"], "either --ratio"),
    (["--hidden-size", "4"], "--num-heads"),
    (["--ratio", "1.5"], "ratio"),
    (["--ratio", "0.5", "--seq-len", "13"], "seq-len"),
    (["--hidden-size", "6", "--num-heads", "4", "--intermediate-size", "6"], "ties the attention width"),
    (["--ratio", "0.5", "--proxy-size", "0"], "proxy size"),
    (["--ratio", "0.5", "--dataset", "MISSING"], "does not exist"),
    (["--ratio", "0.5", "--model", "MISSING"], "MISSING"),
    (["--ratio", "0.5", "--scores", "MISSING"], "scores"),
    (["--ratio", "0.5", "--bogus", "1"], "not used"),
])
def test_example_bad_input_exits_2_with_one_line(saved_model, tmp_path, capsys, extra, message):
    folder, text = saved_model
    args = {"--model": str(folder), "--dataset": str(text), "--seq-len": "8", "--output": str(tmp_path / "o")}
    for flag in ("--model", "--dataset", "--scores"):
        if flag in extra:
            args[flag] = str(tmp_path / extra[extra.index(flag) + 1])
            extra = extra[: extra.index(flag)] + extra[extra.index(flag) + 2 :]
    if "--scores" in args:  # a scores file that does not match: a tiny file of another shape
        random_scores(gpt2_config(n_embd=12, n_inner=5)).save(args["--scores"])
    if extra[-2:-1] == ["--seq-len"]:
        args.pop("--seq-len")
    argv = [x for kv in args.items() for x in kv] + extra
    with pytest.raises(SystemExit) as exit_info:
        load_script().main(argv)
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and err[0].startswith("prune_gpt2.py: error:") and message in err[0], err
    assert not (tmp_path / "o").exists()
