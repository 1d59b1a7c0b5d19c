"""Pruning Transformer-XL (upvit_hf.adapters.transfo_xl) against references written here, in float64.

Scores: Σ over proxy batches and all positions of KL(q ‖ p) of the full adaptive-softmax distribution, every
batch one segment without memory (the model's forward with `mems=[empty] * n_layer`). Attention and FFN scores
are compared with copies whose parameters are zeroed; residual scores with models rebuilt by hand-slicing the
state dict into a config with d_model − 1 (positional width and embedding scale kept). Pruned models are
compared with hand-sliced / zeroed references and reloaded through the Auto classes (also in a fresh interpreter
with trust_remote_code, without upvit_hf).
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import random_scores, top_sorted
from tiny import randomize
from transformers import AutoModelForCausalLM

from upvit_hf import PruningTarget, UPPruner
from upvit_hf.adapters import adapter_for
from upvit_hf.depth import BlockUnit, remove_unit
from upvit_hf.models.transfo_xl import TransfoXLConfig, TransfoXLLMHeadModel, TransfoXLModel


def txl_config(**overrides) -> TransfoXLConfig:
    params = dict(
        vocab_size=30, cutoffs=[8, 16], d_model=12, d_embed=16, n_head=2, d_head=4, d_inner=16, div_val=2,
        n_layer=2, mem_len=3, clamp_len=1000, same_length=False, pre_lnorm=False, untie_r=True,
    )
    params.update(overrides)
    return TransfoXLConfig(**params)


CASES = {
    # adaptive input/softmax with projections per cluster (div_val > 1), post-norm, per-layer r biases
    "post-ln/div2/untied-r": dict(),
    # pre-norm, shared r biases, same_length attention with clamped distances
    "pre-ln/div2/shared-r": dict(pre_lnorm=True, untie_r=False, same_length=True, clamp_len=3),
    # no projection at all: the tied embedding/softmax tables are the residual stream
    "post-ln/div1-no-proj/shared-r": dict(div_val=1, d_embed=12, untie_r=False),
    # one table with projections, untied softmax table, mixed projection ties
    "pre-ln/div1-proj/untied-table": dict(div_val=1, d_embed=16, pre_lnorm=True, tie_word_embeddings=False,
                                          tie_projs=[False, True, False]),
}


def tiny_txl(case: str, seed: int = 0) -> TransfoXLLMHeadModel:
    """Random float32 model; LayerNorm weights around 1, biases (LN, FFN, r biases, softmax) nonzero."""
    return randomize(TransfoXLLMHeadModel(txl_config(**CASES[case])), seed=seed)


def proxy_batches(config, shapes=((3, 6), (2, 5)), seed=1) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    batches = [{"input_ids": torch.randint(0, config.vocab_size, shape, generator=generator)} for shape in shapes]
    batches[0]["attention_mask"] = torch.ones(shapes[0], dtype=torch.long)  # all ones: accepted
    batches[1]["labels"] = batches[1]["input_ids"].clone()  # ignored
    return batches


def no_memory(model, batch: int) -> list[torch.Tensor]:
    """Zero-length memories: the segment attends to itself only (mlen = 0)."""
    cfg = model.config
    return [torch.zeros(0, batch, cfg.d_model, dtype=model.dtype) for _ in range(cfg.n_layer)]


def log_probs(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, mems=no_memory(model, ids.shape[0])).logits


def kl_sum(reference: list[torch.Tensor], model, batches) -> float:
    """Σ over batches and positions of KL(q ‖ p); `reference` holds q's log-probs per batch."""
    total = 0.0
    for q, batch in zip(reference, batches):
        p = log_probs(model, batch["input_ids"])
        total += float((q.exp() * (q - p)).sum())
    return total


def projected(config) -> bool:
    return config.div_val != 1 or config.d_embed != config.d_model


def residual_axis(key: str, has_projections: bool) -> int | None:
    """Axis of `key` that is the residual (d_model) axis; written independently of the library."""
    if "emb_projs" in key or "out_projs" in key:
        return 0
    if not has_projections and key.endswith(("emb_layers.0.weight", "out_layers.0.weight", "cluster_weight")):
        return 1
    if key.endswith(("qkv_net.weight", "CoreNet.0.weight")):
        return 1
    if key.endswith(("o_net.weight", "CoreNet.3.weight", "CoreNet.3.bias")) or "layer_norm" in key:
        return 0
    return None  # r_net reads the position embedding; r biases, cluster bias, tables with projections


def reduced_config(config, **changes) -> TransfoXLConfig:
    """`config` with new widths; the positional width and embedding scale of the original kept."""
    d_model = config.d_model
    values = {**config.to_dict(), "d_pos_emb": d_model, "emb_scale": math.sqrt(d_model), **changes}
    if not projected(config):
        values["d_embed"] = values["d_model"]
    return TransfoXLConfig(**values)


def without_residual_channel(model, channel: int):
    """A float64 model that physically lacks residual channel `channel` (state dict sliced by hand)."""
    config = model.config
    keep = torch.tensor([c for c in range(config.d_model) if c != channel])
    state = {}
    for key, tensor in model.state_dict().items():
        axis = residual_axis(key, projected(config))
        state[key] = (tensor if axis is None else tensor.index_select(axis, keep)).double()
    reduced = TransfoXLLMHeadModel(reduced_config(config, d_model=config.d_model - 1)).double().eval()
    reduced.load_state_dict(state)
    return reduced


def with_zeroed(model, edits):
    """A float64 copy with entries zeroed: `edits` are (parameter name, function returning the view to zero)."""
    zeroed = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for name, select in edits:
            select(zeroed.get_parameter(name)).zero_()
    return zeroed


def attention_edits(config, layer: int, dim: int):
    """Remove attention dim `dim` of `layer`: q, k, v and r rows, o column, and the r bias entries if per-layer.

    Shared r biases stay: with k_dim = r_dim = 0 their entry `dim` contributes nothing in this layer, and zeroing
    them would change the other layers.
    """
    width = config.n_head * config.d_head
    p = f"transformer.layers.{layer}.dec_attn."
    edits = [(p + "qkv_net.weight", lambda w, o=o: w[o + dim]) for o in (0, width, 2 * width)]
    edits += [(p + "r_net.weight", lambda w: w[dim]), (p + "o_net.weight", lambda w: w[:, dim])]
    if config.untie_r:
        edits += [(p + b, lambda w: w.view(-1)[dim : dim + 1]) for b in ("r_w_bias", "r_r_bias")]
    return edits


def ffn_edits(layer: int, channel: int):
    p = f"transformer.layers.{layer}.pos_ff.CoreNet."
    return [(p + "0.weight", lambda w: w[channel]), (p + "0.bias", lambda w: w[channel : channel + 1]),
            (p + "3.weight", lambda w: w[:, channel])]


def reference_scores(model, batches):
    original = copy.deepcopy(model).double().eval()
    original = [log_probs(original, batch["input_ids"]) for batch in batches]
    cfg = model.config
    residual = [kl_sum(original, without_residual_channel(model, c), batches) for c in range(cfg.d_model)]
    attention = [
        [kl_sum(original, with_zeroed(model, attention_edits(cfg, layer, i)), batches)
         for i in range(cfg.n_head * cfg.d_head)]
        for layer in range(cfg.n_layer)
    ]
    ffn = [[kl_sum(original, with_zeroed(model, ffn_edits(layer, j)), batches) for j in range(cfg.d_inner)]
           for layer in range(cfg.n_layer)]
    return (torch.tensor(residual, dtype=torch.float64), [torch.tensor(a, dtype=torch.float64) for a in attention],
            [torch.tensor(f, dtype=torch.float64) for f in ffn])


def assert_scores_close(scores, reference, rtol: float, atol: float) -> None:
    """Every score within rtol of its reference (atol: a channel dead on the proxy set, e.g. a ReLU never on,
    has reference 0 and a score at rounding level)."""
    pairs = [(scores.residual, reference[0]), *zip(scores.attention, reference[1]), *zip(scores.ffn, reference[2])]
    for got, want in pairs:
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
    alive = torch.cat([want for _, want in pairs]) > 1e-6
    assert alive.float().mean() > 0.9  # the references measure something


# ---- scores ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_float64_scores_equal_zeroing_and_physical_removal(case):
    model = tiny_txl(case).double()
    batches = proxy_batches(model.config)
    scores = UPPruner(model).score(batches, variants_per_pass=7, show_progress=False)
    assert scores.meta["proxy_size"] == 5
    assert_scores_close(scores, reference_scores(model, batches), rtol=1e-9, atol=1e-12)


def test_float32_scores_match_float64_reference():
    model = tiny_txl("pre-ln/div2/shared-r", seed=3)
    batches = proxy_batches(model.config)
    scores = UPPruner(model).score(batches, variants_per_pass=16, show_progress=False)
    assert_scores_close(scores, reference_scores(model, batches), rtol=1e-4, atol=1e-5)


def test_variants_per_pass_does_not_change_scores():
    model = tiny_txl("post-ln/div2/untied-r").double()
    batches = proxy_batches(model.config)
    one = UPPruner(model).score(batches, variants_per_pass=1, show_progress=False)
    many = UPPruner(model).score(batches, variants_per_pass=64, show_progress=False)
    for a, b in zip([one.residual, *one.attention, *one.ffn], [many.residual, *many.attention, *many.ffn]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=0)


# ---- pieces ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_adapter_pieces_compose_to_the_model(case):
    model = tiny_txl(case)
    adapter = adapter_for(model)
    ids = proxy_batches(model.config)[0]["input_ids"]
    with torch.no_grad():
        hidden, context = adapter.embed({"input_ids": ids})
        for branch in adapter.branches():
            hidden = branch(hidden, context)
        pieces = adapter.readout(hidden, context)
        stacked = adapter.repeat_context(context, 2)
        hidden2, _ = adapter.embed({"input_ids": ids.repeat(2, 1)})
        for branch in adapter.branches():
            hidden2 = branch(hidden2, stacked)
    torch.testing.assert_close(pieces, log_probs(model, ids), rtol=0, atol=0)
    torch.testing.assert_close(adapter.readout(hidden2, stacked), pieces.repeat(2, 1, 1), rtol=1e-6, atol=1e-6)
    if model.config.same_length:
        return  # there mem_len also sets how far back each query sees, so it cannot be changed to compare
    # mems=None means mem_len zero slots; with mem_len = 0 that is the segment alone as well
    model.config.mem_len = 0
    with torch.no_grad():
        assert model(input_ids=ids).mems is None
        torch.testing.assert_close(model(input_ids=ids).logits, pieces, rtol=0, atol=0)


# ---- pruning ---------------------------------------------------------------------------------------------------


def kept_attention(config, scores, layer, heads, head_dim):
    """Per merged group of heads, the top `head_dim` dims (original indices, in order)."""
    group = config.n_head * config.d_head // heads
    per_group = scores.attention[layer].view(heads, group)
    return torch.cat([top_sorted(per_group[g], head_dim) + g * group for g in range(heads)])


def r_bias(model, layer: int, which: str) -> torch.Tensor:
    owner = model.transformer.layers[layer].dec_attn if model.config.untie_r else model.transformer
    return getattr(owner, which)


@pytest.mark.parametrize("case", list(CASES))
def test_pruning_ffn_and_attention_without_merging_equals_zeroing(case):
    model = tiny_txl(case).double()
    cfg = model.config
    scores = random_scores(cfg, seed=1)
    small = UPPruner(model).prune(PruningTarget(hidden_size=12, num_attention_heads=2, intermediate_size=13,
                                                head_dim=3), scores)
    assert (small.config.d_model, small.config.n_head, small.config.d_head, small.config.d_inner) == (12, 2, 3, 13)
    assert small.config.untie_r
    edits = []
    for layer in range(cfg.n_layer):
        kept = set(kept_attention(cfg, scores, layer, 2, 3).tolist())
        edits += [e for i in range(8) if i not in kept for e in attention_edits(cfg, layer, i)]
        kept = set(top_sorted(scores.ffn[layer], 13).tolist())
        edits += [e for j in range(cfg.d_inner) if j not in kept for e in ffn_edits(layer, j)]
    zeroed = with_zeroed(model, edits)
    for batch in proxy_batches(cfg):
        torch.testing.assert_close(log_probs(small, batch["input_ids"]), log_probs(zeroed, batch["input_ids"]),
                                   rtol=1e-10, atol=1e-10)


def physically_reduced(model, scores, hidden, heads, head_dim, inner):
    """Float64 model sliced by hand: top residual channels, top dims per merged group of heads, top FFN channels,
    per-layer r biases; the original constants (attention scale 1/sqrt(old d_head), embedding scale, positional
    width) kept as they were."""
    cfg = model.config
    res = top_sorted(scores.residual, hidden)
    state = {k: v.double() for k, v in model.state_dict().items() if not k.startswith("transformer.r_")}
    new = {}
    for key, t in state.items():
        axis = residual_axis(key, projected(cfg))
        new[key] = t if axis is None else t.index_select(axis, res)
    width = cfg.n_head * cfg.d_head
    for layer in range(cfg.n_layer):
        p = f"transformer.layers.{layer}."
        att = kept_attention(cfg, scores, layer, heads, head_dim)
        ffn = top_sorted(scores.ffn[layer], inner)
        qkv = state[p + "dec_attn.qkv_net.weight"]
        new[p + "dec_attn.qkv_net.weight"] = torch.cat([qkv[o + att] for o in (0, width, 2 * width)])[:, res]
        new[p + "dec_attn.r_net.weight"] = state[p + "dec_attn.r_net.weight"][att]
        new[p + "dec_attn.o_net.weight"] = state[p + "dec_attn.o_net.weight"][res][:, att]
        for which in ("r_w_bias", "r_r_bias"):
            new[p + "dec_attn." + which] = r_bias(model, layer, which).detach().double().reshape(-1)[att].view(
                heads, head_dim)
        new[p + "pos_ff.CoreNet.0.weight"] = state[p + "pos_ff.CoreNet.0.weight"][ffn][:, res]
        new[p + "pos_ff.CoreNet.0.bias"] = state[p + "pos_ff.CoreNet.0.bias"][ffn]
        new[p + "pos_ff.CoreNet.3.weight"] = state[p + "pos_ff.CoreNet.3.weight"][res][:, ffn]
    config = reduced_config(cfg, d_model=hidden, n_head=heads, d_head=head_dim, d_inner=inner, untie_r=True)
    reduced = TransfoXLLMHeadModel(config).double().eval()
    reduced.load_state_dict(new)
    for layer in reduced.transformer.layers:
        layer.dec_attn.d_head = cfg.d_head  # the attention scale 1/sqrt(d_head) of the original
    return reduced


@pytest.mark.parametrize("case", list(CASES))
def test_pruning_all_components_equals_physical_removal(case):
    model = tiny_txl(case).double()
    scores = random_scores(model.config, seed=2)
    small = UPPruner(model).prune(PruningTarget(hidden_size=9, num_attention_heads=2, intermediate_size=11,
                                                head_dim=3), scores)
    cfg = small.config
    assert type(small) is TransfoXLLMHeadModel and cfg.untie_r
    assert (cfg.d_model, cfg.d_pos_emb, cfg.emb_scale) == (9, 12, math.sqrt(12))
    assert cfg.d_embed == (9 if not projected(model.config) else model.config.d_embed)
    reference = physically_reduced(model, scores, hidden=9, heads=2, head_dim=3, inner=11)
    for batch in proxy_batches(model.config):
        torch.testing.assert_close(log_probs(small, batch["input_ids"]), log_probs(reference, batch["input_ids"]),
                                   rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", ["post-ln/div2/untied-r", "pre-ln/div2/shared-r"])
def test_merged_heads_hold_the_top_dims_of_their_group(case):
    model = tiny_txl(case)
    scores = random_scores(model.config, seed=3)
    small = UPPruner(model).prune(PruningTarget(hidden_size=10, num_attention_heads=1, intermediate_size=16,
                                                head_dim=5), scores)
    assert (small.config.n_head, small.config.d_head) == (1, 5)
    res = top_sorted(scores.residual, 10)
    fold = math.sqrt(5 / 4)
    for layer in range(2):
        kept = top_sorted(scores.attention[layer], 5)  # one group of both 4-dim heads
        old, new = model.transformer.layers[layer].dec_attn, small.transformer.layers[layer].dec_attn
        q, k, v = old.qkv_net.weight.chunk(3)
        nq, nk, nv = new.qkv_net.weight.chunk(3)
        torch.testing.assert_close(nq, q[kept][:, res] * fold)
        torch.testing.assert_close(nk, k[kept][:, res])
        torch.testing.assert_close(nv, v[kept][:, res])
        torch.testing.assert_close(new.r_net.weight, old.r_net.weight[kept])  # all 12 positional inputs
        torch.testing.assert_close(new.o_net.weight, old.o_net.weight[res][:, kept])
        for which in ("r_w_bias", "r_r_bias"):
            torch.testing.assert_close(getattr(new, which), r_bias(model, layer, which).reshape(-1)[kept].view(1, 5)
                                       * fold)


def test_original_model_is_untouched_and_record_is_kept():
    model = tiny_txl("pre-ln/div2/shared-r")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = UPPruner(model)
    scores = pruner.score(proxy_batches(model.config), show_progress=False)
    small = pruner.prune(PruningTarget.from_ratio(model.config, 0.5), scores)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not model.config.untie_r and model.config.d_pos_emb is None and model.config.emb_scale is None
    record = small.config.upvit_pruning
    assert record["original"]["hidden_size"] == 12 and record["pruned"]["hidden_size"] == 6
    assert (record["method"], record["proxy_size"]) == ("kl", 5)
    magnitude = pruner.score(method="magnitude")  # the baseline reads the per-layer r biases too
    assert magnitude.attention[0].shape == (8,) and bool((magnitude.attention[1] > 0).all())


def test_headless_backbone_prunes_with_given_scores_like_the_lm():
    lm = tiny_txl("pre-ln/div2/shared-r")
    scores = random_scores(lm.config, seed=4)
    target = PruningTarget(hidden_size=8, num_attention_heads=1, intermediate_size=10, head_dim=6)
    small_lm = UPPruner(lm).prune(target, scores)
    backbone = UPPruner(lm.transformer).prune(target, scores)
    assert type(backbone) is TransfoXLModel and backbone.config.d_model == 8
    ids = proxy_batches(lm.config)[0]["input_ids"]
    with torch.no_grad():
        got = backbone(input_ids=ids, mems=no_memory(backbone, 3)).last_hidden_state
        want = small_lm.transformer(input_ids=ids, mems=no_memory(small_lm, 3)).last_hidden_state
    torch.testing.assert_close(got, want, rtol=0, atol=0)


# ---- depth -----------------------------------------------------------------------------------------------------


def test_depth_units_remove_whole_halves_with_shared_r_biases():
    """Block and hybrid units: surgery and scores (the generic depth code through this adapter)."""
    model = tiny_txl("pre-ln/div2/shared-r").double()
    adapter = adapter_for(model)
    assert adapter.blocks() is model.transformer.layers
    state = {k: v for k, v in model.state_dict().items()}
    batches = proxy_batches(model.config)
    ids = batches[0]["input_ids"]
    original = [log_probs(model, batch["input_ids"]) for batch in batches]
    scores = UPPruner(model).score_blocks(batches, show_progress=False).by_branch()
    units = ((BlockUnit.block(0), (1, 1)), (BlockUnit.hybrid(0), (0, 1)), (BlockUnit.block(1), (0, 0)))
    for unit, (attention_from, ffn_from) in units:
        config, reduced_state = remove_unit(adapter, unit)
        reduced = TransfoXLLMHeadModel(config).double().eval()
        reduced.load_state_dict(reduced_state)
        # by hand: one layer made of the surviving attention half and FFN half
        by_hand = {k: v for k, v in state.items() if not k.startswith("transformer.layers.")}
        for key, value in state.items():
            for half, source in (("dec_attn.", attention_from), ("pos_ff.", ffn_from)):
                if key.startswith(f"transformer.layers.{source}.{half}"):
                    by_hand[key.replace(f"layers.{source}.", "layers.0.")] = value
        reference = TransfoXLLMHeadModel(TransfoXLConfig(**{**model.config.to_dict(), "n_layer": 1})).double().eval()
        reference.load_state_dict(by_hand)
        torch.testing.assert_close(log_probs(reduced, ids), log_probs(reference, ids), rtol=0, atol=0)
        assert float(scores[unit.first_branch]) == pytest.approx(kl_sum(original, reference, batches), rel=1e-9)


# ---- reload ----------------------------------------------------------------------------------------------------


FRESH_LOAD = textwrap.dedent("""
    import sys, torch
    from transformers import AutoModelForCausalLM
    ref = torch.load(sys.argv[1])
    for folder, logits in ref["models"].items():
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        mems = [torch.zeros(0, ref["ids"].shape[0], model.config.d_model) for _ in range(model.config.n_layer)]
        with torch.no_grad():
            torch.testing.assert_close(model(input_ids=ref["ids"], mems=mems).logits, logits, rtol=0, atol=0)
    assert "upvit_hf" not in sys.modules, "upvit_hf was imported"
    print("OK", len(ref["models"]))
""")


def test_pruned_models_reload_with_auto_classes_and_in_a_fresh_interpreter(tmp_path):
    ids = proxy_batches(txl_config())[0]["input_ids"]
    reference = {"ids": ids, "models": {}}
    for name, case in (("shared_r", "pre-ln/div2/shared-r"), ("no_proj", "post-ln/div1-no-proj/shared-r")):
        model = tiny_txl(case)
        pruner = UPPruner(model)
        small = pruner.prune(PruningTarget(hidden_size=8, num_attention_heads=1, intermediate_size=12, head_dim=5),
                             pruner.score(proxy_batches(model.config), show_progress=False))
        folder = tmp_path / name
        small.save_pretrained(folder)
        reloaded, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
        assert not any(info.values()), info
        assert type(reloaded) is TransfoXLLMHeadModel and reloaded.config.untie_r
        assert (reloaded.config.d_model, reloaded.config.d_pos_emb, reloaded.config.emb_scale) == (8, 12, math.sqrt(12))
        for target, source in reloaded.all_tied_weights_keys.items():
            assert reloaded.get_parameter(target) is reloaded.get_parameter(source)
        expected = log_probs(small, ids)
        torch.testing.assert_close(log_probs(reloaded.eval(), ids), expected, rtol=0, atol=0)
        reference["models"][str(folder)] = expected
    torch.save(reference, tmp_path / "reference.pt")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HOME": str(tmp_path / "hf_home"),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    out = subprocess.run([sys.executable, "-c", FRESH_LOAD, str(tmp_path / "reference.pt")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "OK 2"


# ---- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target, message", [
    (PruningTarget(8, 3, 12), "must divide"),
    (PruningTarget(13, 2, 12), "exceeds"),
    (PruningTarget(8, 2, 17), "exceeds"),
    (PruningTarget(8, 2, 12, head_dim=5), "head_dim"),
    (PruningTarget(0, 2, 12), "positive"),
])
def test_bad_targets_raise(target, message):
    model = tiny_txl("post-ln/div2/untied-r")
    with pytest.raises(ValueError, match=message):
        UPPruner(model).prune(target, random_scores(model.config))


def test_hidden_size_equal_to_d_embed_of_a_single_projected_table_raises():
    model = randomize(TransfoXLLMHeadModel(txl_config(div_val=1, d_model=16, d_embed=12)))
    with pytest.raises(ValueError, match="d_embed"):
        UPPruner(model).prune(PruningTarget(12, 2, 12, head_dim=4), random_scores(model.config))
    UPPruner(model).prune(PruningTarget(11, 2, 12, head_dim=4), random_scores(model.config))  # other widths: fine


def test_bad_proxy_sets_and_headless_scoring_raise():
    model = tiny_txl("post-ln/div2/untied-r")
    pruner = UPPruner(model)
    padded = {"input_ids": torch.ones(2, 4, dtype=torch.long),
              "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])}
    with pytest.raises(ValueError, match="padding"):
        pruner.score([padded], show_progress=False)
    with pytest.raises(ValueError, match="missing input_ids"):
        pruner.score([{"pixel_values": torch.zeros(1, 3)}], show_progress=False)
    with pytest.raises(ValueError, match="headless"):
        UPPruner(model.transformer).score(proxy_batches(model.config), show_progress=False)
