"""Transformer-XL for transformers 5 (upvit_hf.models.transfo_xl).

The golden fixtures (tests/fixtures/transfo_xl, written by transformers 4.35.2 with make_fixture.py) are the
reference: checkpoints saved by 4.x must load through the Auto classes and reproduce 4.x log-probabilities,
memories and per-token losses over two segments.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

import upvit_hf.models  # noqa: F401  (registers the Auto classes)
from upvit_hf.models.transfo_xl import TransfoXLConfig, TransfoXLLMHeadModel, TransfoXLModel

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "transfo_xl"
CASES = ["post_ln", "pre_ln", "same_length"]
ATOL = 1e-5


@pytest.fixture(scope="module")
def loaded() -> dict[str, tuple[TransfoXLLMHeadModel, dict[str, torch.Tensor]]]:
    """Each fixture checkpoint loaded once through `AutoModelForCausalLM`, with its 4.x expectations."""
    out = {}
    for case in CASES:
        model, info = AutoModelForCausalLM.from_pretrained(FIXTURES / case, output_loading_info=True)
        assert not any(info.values()), f"{case}: loading info {info}"
        out[case] = (model, load_file(FIXTURES / case / "expected.safetensors"))
    return out


def _tiny_config(**overrides) -> TransfoXLConfig:
    params = dict(
        vocab_size=30, cutoffs=[8, 16], d_model=12, d_embed=16, n_head=2, d_head=4, d_inner=20, div_val=2,
        n_layer=2, mem_len=3, clamp_len=1000, same_length=False,
    )
    params.update(overrides)
    return TransfoXLConfig(**params)


# ---- equivalence with transformers 4.x ----------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_matches_transformers_4x_over_two_segments(loaded, case):
    model, expected = loaded[case]
    assert isinstance(model, TransfoXLLMHeadModel) and not model.training
    cfg = model.config
    assert {"post_ln": False, "pre_ln": True, "same_length": False}[case] == cfg.pre_lnorm
    mems = None
    for s in (1, 2):
        ids, labels = expected[f"input_ids_{s}"], expected[f"labels_{s}"]
        with torch.no_grad():
            out = model(input_ids=ids, mems=mems)
            with_labels = model(input_ids=ids, mems=mems, labels=labels)
        torch.testing.assert_close(out.prediction_scores, expected[f"prediction_scores_{s}"], atol=ATOL, rtol=0)
        assert out.logits is out.prediction_scores
        assert len(out.mems) == cfg.n_layer
        for layer, mem in enumerate(out.mems):
            assert mem.shape == (cfg.mem_len, ids.shape[0], cfg.d_model)
            torch.testing.assert_close(mem, expected[f"mems_{s}_{layer}"], atol=ATOL, rtol=0)
        torch.testing.assert_close(with_labels.losses, expected[f"losses_{s}"], atol=ATOL, rtol=0)
        torch.testing.assert_close(with_labels.loss, expected[f"loss_{s}"], atol=ATOL, rtol=0)
        torch.testing.assert_close(with_labels.logits, out.logits, atol=0, rtol=0)
        mems = out.mems


def test_fixture_configs_cover_the_variants(loaded):
    cfgs = {case: loaded[case][0].config for case in CASES}
    assert {c.untie_r for c in cfgs.values()} == {True, False}
    post = cfgs["post_ln"]
    assert post.div_val > 1 and post.cutoffs and post.d_embed != post.d_model and post.tie_projs == [False, True, False]
    assert cfgs["pre_ln"].div_val == 1 and cfgs["pre_ln"].cutoffs and any(cfgs["pre_ln"].tie_projs)
    assert cfgs["same_length"].same_length and 0 < cfgs["same_length"].clamp_len < 10
    assert not cfgs["same_length"].tie_word_embeddings
    # The checkpoints were saved by 4.x without the tied aliases: ties must have been restored on load.
    for case in ("post_ln", "pre_ln"):
        model = loaded[case][0]
        assert model.all_tied_weights_keys
        for target, source in model.all_tied_weights_keys.items():
            assert model.get_parameter(target) is model.get_parameter(source), (case, target)
    assert loaded["same_length"][0].all_tied_weights_keys == {}


@pytest.mark.parametrize("case", ["post_ln", "pre_ln"])
def test_pieces_reproduce_forward(loaded, case):
    """embed -> relative_positions -> run_attention/run_feed_forward per layer -> log_probs == forward."""
    model, expected = loaded[case]
    base = model.transformer
    ids = expected["input_ids_2"]
    with torch.no_grad():
        first = model(input_ids=expected["input_ids_1"])
        full = model(input_ids=ids, mems=first.mems)
        hidden = base.embed(ids)
        mlen = first.mems[0].shape[0]
        pos_emb, attn_mask = base.relative_positions(ids.shape[1], mlen)
        assert pos_emb.shape == (1, mlen + ids.shape[1], model.config.effective_d_pos_emb)
        assert attn_mask.shape == (ids.shape[1], mlen + ids.shape[1]) and attn_mask.dtype == torch.bool
        layer_inputs = []
        for i in range(model.config.n_layer):
            layer_inputs.append(hidden)
            memory = first.mems[i].transpose(0, 1)
            hidden, _ = base.run_attention(i, hidden, pos_emb, attn_mask, memory)
            hidden = base.run_feed_forward(i, hidden)
        scores = model.log_probs(hidden)
        new_mems = base.update_mems(layer_inputs, first.mems, mlen, ids.shape[1])
    torch.testing.assert_close(scores, full.logits, atol=0, rtol=0)
    for got, want in zip(new_mems, full.mems):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_per_sample_channel_masks_broadcast_on_batch_first_outputs(loaded):
    """A [batch, 1, width] mask hooked on qkv_net/r_net/o_net/FFN linears/LayerNorms acts per sample."""
    model, expected = loaded["post_ln"]
    ids = expected["input_ids_1"]
    layer = model.transformer.layers[0]
    modules = [
        layer.dec_attn.qkv_net, layer.dec_attn.r_net, layer.dec_attn.o_net, layer.dec_attn.layer_norm,
        layer.pos_ff.CoreNet[0], layer.pos_ff.CoreNet[3], layer.pos_ff.layer_norm,
    ]
    generator = torch.Generator().manual_seed(0)
    masks = [(torch.rand(ids.shape[0], 1, m.weight.shape[0], generator=generator) > 0.3).float() for m in modules]

    def run(batch_ids, rows):
        handles = [
            module.register_forward_hook(lambda _m, _i, out, mask=mask: out * mask[rows])
            for module, mask in zip(modules, masks)
        ]
        try:
            with torch.no_grad():
                return model(input_ids=batch_ids).logits
        finally:
            for handle in handles:
                handle.remove()

    together = run(ids, slice(None))
    for b in range(ids.shape[0]):
        alone = run(ids[b : b + 1], slice(b, b + 1))
        torch.testing.assert_close(together[b : b + 1], alone, atol=1e-5, rtol=0)
    with torch.no_grad():
        assert not torch.allclose(together, model(input_ids=ids).logits)


# ---- registration, save / load --------------------------------------------------------------------------------


def test_auto_classes_are_registered():
    import upvit_hf.models.transfo_xl as transfo_xl

    transfo_xl.register_auto_classes()  # idempotent
    assert type(AutoConfig.for_model("transfo-xl")) is TransfoXLConfig
    assert type(AutoConfig.from_pretrained(FIXTURES / "post_ln")) is TransfoXLConfig
    config = _tiny_config()
    assert type(AutoModel.from_config(config)) is TransfoXLModel
    fresh = AutoModelForCausalLM.from_config(config)
    assert type(fresh) is TransfoXLLMHeadModel
    assert fresh.all_tied_weights_keys  # emb_layers and (tie_projs) emb_projs are shared with the softmax
    for target, source in fresh.all_tied_weights_keys.items():
        assert fresh.get_parameter(target) is fresh.get_parameter(source)
    assert type(AutoModel.from_pretrained(FIXTURES / "post_ln")) is TransfoXLModel


def test_save_pretrained_roundtrip_is_identical(loaded, tmp_path):
    for case in ("post_ln", "pre_ln"):
        model, expected = loaded[case]
        model.save_pretrained(tmp_path / case)
        saved = sorted(p.name for p in (tmp_path / case).iterdir())
        assert {"config.json", "model.safetensors", "modeling_transfo_xl.py", "configuration_transfo_xl.py"} <= set(
            saved
        )
        config = json.loads((tmp_path / case / "config.json").read_text())
        assert config["auto_map"] == {
            "AutoConfig": "configuration_transfo_xl.TransfoXLConfig",
            "AutoModelForCausalLM": "modeling_transfo_xl.TransfoXLLMHeadModel",
        }
        stored = load_file(tmp_path / case / "model.safetensors")
        assert not set(model.all_tied_weights_keys) & set(stored), "tied aliases must not be stored"

        reloaded, info = AutoModelForCausalLM.from_pretrained(tmp_path / case, output_loading_info=True)
        assert not any(info.values()), info
        for target, source in reloaded.all_tied_weights_keys.items():
            assert reloaded.get_parameter(target) is reloaded.get_parameter(source)
        ids = expected["input_ids_1"]
        with torch.no_grad():
            a, b = model(input_ids=ids, labels=ids), reloaded(input_ids=ids, labels=ids)
        torch.testing.assert_close(a.logits, b.logits, atol=0, rtol=0)
        torch.testing.assert_close(a.losses, b.losses, atol=0, rtol=0)
        for x, y in zip(a.mems, b.mems):
            torch.testing.assert_close(x, y, atol=0, rtol=0)


def test_trust_remote_code_loads_in_a_fresh_interpreter_without_upvit_hf(loaded, tmp_path):
    model, expected = loaded["same_length"]
    folder = tmp_path / "remote"
    model.save_pretrained(folder)
    ids = expected["input_ids_1"]
    with torch.no_grad():
        torch.save({"ids": ids, "logits": model(input_ids=ids).logits}, tmp_path / "reference.pt")
    code = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert "upvit_hf" not in sys.modules, "upvit_hf was imported"
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        ref = torch.load({str(tmp_path / "reference.pt")!r})
        with torch.no_grad():
            logits = model(input_ids=ref["ids"]).logits
        torch.testing.assert_close(logits, ref["logits"], atol=0, rtol=0)
        print("OK", type(model).__name__)
        """
    )
    env = {
        **os.environ,
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK TransfoXLLMHeadModel" in result.stdout


# ---- generation ---------------------------------------------------------------------------------------------


def _memory_loop(model, prompt, continuation, mems=None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Reference: ``[b, steps, vocab]`` float64 log-probabilities of each next token, feeding the prompt once and then
    one continuation token at a time with the memories of the previous call (the Transformer-XL way, no `generate`);
    and the memories after the last call."""
    steps = []
    with torch.no_grad():
        out = model(input_ids=prompt, mems=mems)
        steps.append(out.logits[:, -1])
        for t in range(continuation.shape[1] - 1):
            out = model(input_ids=continuation[:, t : t + 1], mems=out.mems)
            steps.append(out.logits[:, -1])
    return torch.stack(steps, dim=1).double().log_softmax(-1), out.mems


def _memory_loop_log_probs(model, prompt, continuation, mems=None) -> torch.Tensor:
    return _memory_loop(model, prompt, continuation, mems)[0]


def _generated_scores(model, prompt, **kwargs):
    # No end-of-sequence token: every row runs for max_new_tokens steps, so no logits processor touches the scores.
    out = model.generate(
        prompt, output_scores=True, return_dict_in_generate=True, do_sample=False, eos_token_id=None, **kwargs
    )
    return out, torch.stack(out.scores, dim=1).double()


@pytest.mark.parametrize("case", ["post_ln", "pre_ln"])
def test_greedy_generate_scores_equal_the_memory_loop(loaded, case):
    model, _ = loaded[case]
    prompt = torch.tensor([[5, 12, 33, 7], [40, 2, 18, 51]])
    new_tokens = 8
    assert prompt.shape[1] + new_tokens > 2 * model.config.mem_len  # memories are truncated along the way
    out, scores = _generated_scores(
        model, prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens
    )
    continuation = out.sequences[:, prompt.shape[1] :]
    assert continuation.shape[1] == new_tokens
    reference, mems = _memory_loop(model, prompt, continuation)
    torch.testing.assert_close(scores, reference, atol=1e-5, rtol=0)
    # `generate` returns the memories it ended with: those of the loop after it fed all but the last token.
    assert len(out.cache) == model.config.n_layer
    for got, want in zip(out.cache, mems):
        assert got.shape == (model.config.mem_len, prompt.shape[0], model.config.d_model)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_generate_without_cache_rereads_the_whole_sequence(loaded):
    model, _ = loaded["post_ln"]
    prompt = torch.tensor([[5, 12, 33, 7], [40, 2, 18, 51]])
    out, scores = _generated_scores(model, prompt, max_new_tokens=4, use_cache=False)
    with torch.no_grad():
        reference = torch.stack(
            [model(input_ids=out.sequences[:, : prompt.shape[1] + t]).logits[:, -1] for t in range(4)], dim=1
        )
    torch.testing.assert_close(scores, reference.double().log_softmax(-1), atol=1e-5, rtol=0)
    # ... which is not what the memory loop computes once the sequence outgrows the memory.
    cached = _memory_loop_log_probs(model, prompt, out.sequences[:, prompt.shape[1] :])
    assert (scores - cached).abs().max() > 1e-3


@pytest.mark.parametrize("case", ["post_ln", "pre_ln"])
def test_beam_search_scores_follow_each_beam_with_its_own_memories(loaded, case):
    """Per step, the scores of the beam each returned sequence came from equal the memory loop run on that
    sequence's own prefix; sequence scores equal the loop's summed log-probabilities with the length penalty."""
    model, _ = loaded[case]
    prompt = torch.tensor([[3, 14, 15], [9, 26, 53]])
    num_beams, new_tokens, length_penalty = 3, 7, 1.5
    out, scores = _generated_scores(
        model, prompt, max_new_tokens=new_tokens, num_beams=num_beams, num_return_sequences=2,
        length_penalty=length_penalty,
    )
    sequences = out.sequences
    assert sequences.shape[0] == 2 * prompt.shape[0]
    rows_prompt = prompt.repeat_interleave(2, dim=0)
    continuation = sequences[:, prompt.shape[1] :]
    reference = _memory_loop_log_probs(model, rows_prompt, continuation)
    beam_indices = out.beam_indices[:, : continuation.shape[1]]
    valid = beam_indices >= 0
    assert valid[:, 0].all() and valid.sum() > len(sequences) * model.config.mem_len  # beyond the memory length
    chosen = torch.zeros(sequences.shape[0], dtype=torch.float64)
    for row in range(sequences.shape[0]):
        for t in range(continuation.shape[1]):
            if not valid[row, t]:
                continue
            step_scores = scores[beam_indices[row, t], t]
            torch.testing.assert_close(step_scores, reference[row, t], atol=1e-5, rtol=0)
            chosen[row] += reference[row, t, continuation[row, t]]
    lengths = valid.sum(dim=1).double()
    expected = chosen / lengths**length_penalty
    torch.testing.assert_close(out.sequences_scores.double(), expected, atol=1e-5, rtol=0)


def test_generate_continues_from_prompt_memories_greedy_and_beam(loaded):
    model, _ = loaded["pre_ln"]
    context = torch.tensor([[3, 14, 15, 9], [9, 26, 53, 2]])
    prompt = torch.tensor([[8], [21]])
    with torch.no_grad():
        mems = model(input_ids=context).mems
    out, scores = _generated_scores(model, prompt, mems=mems, max_new_tokens=5)
    reference = _memory_loop_log_probs(model, prompt, out.sequences[:, 1:], mems=mems)
    torch.testing.assert_close(scores, reference, atol=1e-5, rtol=0)
    # Without the context the first step differs: the memories were used.
    fresh = _memory_loop_log_probs(model, prompt, out.sequences[:, 1:2])
    assert (scores[:, 0] - fresh[:, 0]).abs().max() > 1e-3

    beams, beam_scores = _generated_scores(model, prompt, mems=mems, max_new_tokens=3, num_beams=2)
    first = _memory_loop_log_probs(model, prompt, prompt, mems=mems)[:, 0]
    # Step 0: both beams of a sample start from that sample's context memories.
    torch.testing.assert_close(beam_scores[:, 0], first.repeat_interleave(2, dim=0), atol=1e-5, rtol=0)


# ---- configuration --------------------------------------------------------------------------------------------


def test_unsupported_settings_raise_value_error():
    with pytest.raises(ValueError, match="attn_type"):
        TransfoXLConfig(attn_type=1)
    with pytest.raises(ValueError, match="sample_softmax"):
        TransfoXLConfig(sample_softmax=100)
    config = _tiny_config()
    config.attn_type = 2
    with pytest.raises(ValueError, match="attn_type"):
        TransfoXLModel(config)
    model = TransfoXLLMHeadModel(_tiny_config()).eval()
    with pytest.raises(ValueError, match="padding"):
        model(input_ids=torch.zeros(2, 3, dtype=torch.long), attention_mask=torch.tensor([[1, 1, 1], [0, 1, 1]]))


def test_4x_config_keys_and_pruning_constants(loaded):
    hub_style = {
        "model_type": "transfo-xl", "n_token": 50, "cutoffs": [10, 20], "d_model": 8, "d_embed": 8, "n_head": 2,
        "d_head": 4, "d_inner": 16, "div_val": 1, "n_layer": 1, "tgt_len": 128, "ext_len": 0, "tie_weight": True,
        "tie_projs": [False, True, True], "torch_dtype": "float32",
    }
    config = AutoConfig.for_model(**hub_style)
    assert config.vocab_size == 50 and config.hidden_size == 8 and config.num_hidden_layers == 1
    assert config.tgt_len == 128 and config.tie_projs == [False, True, True]
    assert TransfoXLConfig(proj_share_all_but_first=False, cutoffs=[5], vocab_size=9).tie_projs == [False, False]
    assert (config.effective_d_pos_emb, config.effective_emb_scale) == (8, 8**0.5)

    # Explicit values equal to the defaults change nothing; d_pos_emb sets the r_net input width.
    model, expected = loaded["post_ln"]
    explicit = TransfoXLConfig(**{**model.config.to_dict(), "d_pos_emb": 16, "emb_scale": 16**0.5})
    twin = TransfoXLLMHeadModel(explicit).eval()
    twin.load_state_dict(model.state_dict())
    ids = expected["input_ids_1"]
    with torch.no_grad():
        torch.testing.assert_close(twin(input_ids=ids).logits, model(input_ids=ids).logits, atol=0, rtol=0)
    wide = TransfoXLModel(_tiny_config(d_pos_emb=20, emb_scale=2.0))
    assert wide.layers[0].dec_attn.r_net.in_features == 20
    doubled = TransfoXLModel(_tiny_config(d_pos_emb=20, emb_scale=4.0))
    doubled.load_state_dict(wide.state_dict())
    ids = torch.tensor([[1, 9, 20, 29]])  # one token per cluster and more
    with torch.no_grad():
        torch.testing.assert_close(doubled.embed(ids), 2 * wide.embed(ids), atol=0, rtol=0)


@pytest.mark.parametrize("div_val, tie_projs", [(1, [False] * 3), (2, [False] * 3), (2, [True] * 3)])
def test_fresh_models_initialize_every_projection(div_val, tie_projs):
    config = TransfoXLConfig(vocab_size=30, cutoffs=[8, 16], d_model=12, d_embed=16, div_val=div_val, n_head=2,
                             d_head=4, d_inner=20, n_layer=2, tie_projs=tie_projs, proj_init_std=0.01)
    model = TransfoXLLMHeadModel(config)
    projections = [*model.transformer.word_emb.emb_projs, *[p for p in model.crit.out_projs if p is not None]]
    assert projections
    for proj in projections:
        assert torch.isfinite(proj).all()
        assert 0.002 < float(proj.detach().std()) < 0.05  # drawn from N(0, proj_init_std), not left as garbage
