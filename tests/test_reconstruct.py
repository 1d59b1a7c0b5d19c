"""Least-squares reconstruction (upvit_hf.reconstruct, `UPPruner.prune(..., reconstruct=proxy)`).

References are computed here: each refit map's input is captured with hooks from a plain forward of the
reconstructed model (sequential calibration means exactly these inputs), its target from a plain forward of
the original (that map's output at the kept residual channels), and the closed-form ridge solution is solved
with numpy in float64.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from test_transfo_xl_pruning import proxy_batches as txl_batches
from test_cli import assets, upvit  # noqa: F401  (the tiny ViT folder and image dataset fixture)
from test_transfo_xl_pruning import CASES as TXL_CASES
from test_transfo_xl_pruning import txl_config
from tiny import gpt2_config, image_batches, randomize, token_batches, vit_config
from transformers import AutoModelForImageClassification, GPT2LMHeadModel, ViTForImageClassification

from upvit_hf import ImportanceScores, PruningTarget, UPPruner
from upvit_hf.adapters import NormRefit, adapter_for
from upvit_hf.models.transfo_xl import TransfoXLLMHeadModel
import upvit_hf.reconstruct as reconstruct_module
from upvit_hf.reconstruct import RIDGE, NormalEquations
from upvit_hf.record import RECORD_KEY


def random_scores(model, seed: int = 0) -> ImportanceScores:
    widths = adapter_for(model).widths
    g = torch.Generator().manual_seed(seed)
    return ImportanceScores(
        torch.rand(widths.hidden_size, generator=g, dtype=torch.float64),
        [torch.rand(widths.attention_width, generator=g, dtype=torch.float64) for _ in range(widths.num_hidden_layers)],
        [torch.rand(widths.intermediate_size, generator=g, dtype=torch.float64)
         for _ in range(widths.num_hidden_layers)],
        meta={"method": "random"},
    )


def vit_case():
    config = vit_config(num_attention_heads=4, hidden_size=16, intermediate_size=24)
    model = randomize(ViTForImageClassification(config))
    return model, image_batches(config, sizes=(8, 8, 6))


def gpt2_case():
    config = gpt2_config(n_embd=12, n_head=4, n_inner=16)
    return randomize(GPT2LMHeadModel(config), std=0.2), token_batches(config, lengths=((6, 4, 5), (6, 6), (3, 6)))


def txl_case():
    # mem_len 0: a plain forward is one segment without memory, as reconstruction (and scoring) runs it
    model = randomize(TransfoXLLMHeadModel(txl_config(**TXL_CASES["pre-ln/div2/shared-r"], mem_len=0)))
    return model, txl_batches(model.config, shapes=((4, 6), (3, 5), (3, 6)))


CASES = {"vit": vit_case, "gpt2": gpt2_case, "transfo-xl": txl_case}
# hidden, heads, inner, head_dim: residual cut, pairs of heads merged
MERGED = {"vit": PruningTarget(12, 2, 16, head_dim=6), "gpt2": PruningTarget(8, 2, 12),
          "transfo-xl": PruningTarget(9, 1, 12, head_dim=6)}


def inputs_of(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


def run(model, batch):
    with torch.no_grad():
        return model(**inputs_of(batch))


def rows_of(model, batches, reads, writes):
    """(inputs of `reads`, outputs of `writes`) over the proxy set as float64 rows, padding rows dropped."""
    xs, ys = [], []
    handles = [reads.register_forward_pre_hook(lambda _, args: xs.append(args[0])),
               writes.register_forward_hook(lambda _, args, out: ys.append(out))]
    try:
        for batch in batches:
            run(model, batch)
    finally:
        for h in handles:
            h.remove()
    rows = []
    for x, y, batch in zip(xs, ys, batches):
        mask = batch.get("attention_mask")
        keep = mask.bool() if mask is not None and mask.shape == x.shape[:-1] else torch.ones(x.shape[:-1], dtype=bool)
        rows.append((x[keep], y[keep]))
    return torch.cat([r[0] for r in rows]).double(), torch.cat([r[1] for r in rows]).double()


def map_io(model, batches, maps):
    """Per map: (inputs [rows, in], outputs [rows, out]) over the proxy set, padding rows dropped."""
    return [rows_of(model, batches, m.module, m.module) for m in maps]


def all_maps(model):
    adapter = adapter_for(model)
    return [m for layer in range(adapter.widths.num_hidden_layers) for m in adapter.refit_maps(layer)]


def readout_parameters(model) -> list[torch.Tensor]:
    """The parameters readout reconstruction may change: a head's, or a final norm's refit through a tied head."""
    maps = adapter_for(model).readout_maps()
    return [p for m in maps for p in ((m.norm.weight, m.norm.bias) if isinstance(m, NormRefit)
                                      else (m.module.weight, m.bias)) if p is not None]


def kept_residual(scores, hidden):
    return torch.topk(scores.residual, hidden).indices.sort().values


@pytest.mark.parametrize("family", CASES)
def test_block_whose_pruning_removed_nothing_keeps_its_weights(family):
    model, batches = CASES[family]()
    widths = adapter_for(model).widths
    # only the FFN is cut: the attention maps lost nothing and must stay as surgery left them
    target = PruningTarget(widths.hidden_size, widths.num_attention_heads, widths.intermediate_size - 5,
                           head_dim=widths.head_dim)
    scores = random_scores(model)
    pruner = UPPruner(model)
    plain = pruner.prune(target, scores)
    rebuilt = pruner.prune(target, scores, reconstruct=batches, show_progress=False)
    for layer in range(widths.num_hidden_layers):
        (attn_p, ffn_p), (attn_r, ffn_r) = adapter_for(plain).refit_maps(layer), adapter_for(rebuilt).refit_maps(layer)
        assert torch.equal(attn_p.module.weight, attn_r.module.weight)
        if attn_p.bias is not None:
            assert torch.equal(attn_p.bias, attn_r.bias)
        assert not torch.equal(ffn_p.module.weight, ffn_r.module.weight)  # the cut FFN was refit
    plain_state, rebuilt_state = plain.state_dict(), rebuilt.state_dict()
    refit = [p for m in all_maps(rebuilt)[1::2] for p in (m.module.weight, m.bias)] + readout_parameters(rebuilt)
    refit_names = {n for n, p in rebuilt.named_parameters() if any(p is q for q in refit)}
    for name, tensor in plain_state.items():
        if name not in refit_names:
            assert torch.equal(tensor, rebuilt_state[name]), name


def closed_form_ridge(x, y, w0, b0, ridge):
    """argmin Σ‖x Wᵀ + b − y‖² + λ‖W − W0‖², λ = ridge · mean diag(xᵀx), by numpy in float64."""
    x, y, w0 = x.numpy(), y.numpy(), w0.double().numpy()
    rows, width = x.shape
    lam = ridge * np.mean(np.sum(x * x, axis=0))
    if b0 is None:
        return np.linalg.solve(x.T @ x + lam * np.eye(width), x.T @ y + lam * w0.T).T, None
    xa = np.hstack([x, np.ones((rows, 1))])
    penalty = np.diag(np.r_[np.full(width, lam), 0.0])
    prior = np.vstack([w0.T, b0.double().numpy()[None]])
    coef = np.linalg.solve(xa.T @ xa + penalty, xa.T @ y + penalty @ prior)
    return coef[:-1].T, coef[-1]


@pytest.mark.parametrize("chunk", [None, 5])  # 5: one row converted to float64 at a time
def test_normal_equations_over_batches_equal_the_closed_form(chunk, monkeypatch):
    if chunk is not None:
        monkeypatch.setattr(reconstruct_module, "CHUNK", chunk)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 7, generator=g, dtype=torch.float64) @ torch.randn(7, 7, generator=g, dtype=torch.float64)
    y = torch.randn(50, 3, generator=g, dtype=torch.float64)
    w0, b0 = torch.randn(3, 7, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    for bias in (b0, None):
        equations = NormalEquations(7, 3, bias is not None)
        for chunk in (slice(0, 20), slice(20, 21), slice(21, 50)):  # batches of different sizes
            equations.add(x[chunk].float(), y[chunk].float())
        coef = equations.solve(equations.coefficients(w0, bias), ridge=0.1)
        w, b = closed_form_ridge(x.float().double(), y.float().double(), w0, bias, 0.1)
        np.testing.assert_allclose(coef[:7].T.numpy(), w, rtol=1e-9, atol=1e-9)
        if bias is not None:
            np.testing.assert_allclose(coef[7].numpy(), b, rtol=1e-9, atol=1e-9)
        # with a vanishing ridge: ordinary least squares
        ols = equations.solve(equations.coefficients(w0, bias), ridge=1e-12)
        design = np.hstack([x.float().double().numpy(), np.ones((50, 1))]) if bias is not None else x.float().double().numpy()
        np.testing.assert_allclose(ols.numpy(), np.linalg.lstsq(design, y.float().double().numpy(), rcond=None)[0],
                                   rtol=1e-6, atol=1e-6)


def test_row_weights_drop_padding():
    equations = NormalEquations(2, 1, True)
    x, y = torch.tensor([[1.0, 2.0], [3.0, 5.0], [7.0, 11.0]]), torch.tensor([[1.0], [2.0], [100.0]])
    equations.add(x, y, torch.tensor([1.0, 1.0, 0.0]))
    reference = NormalEquations(2, 1, True)
    reference.add(x[:2], y[:2])
    torch.testing.assert_close(equations.gram, reference.gram)
    torch.testing.assert_close(equations.cross, reference.cross)
    assert equations.rows == 2


@pytest.mark.parametrize("family", CASES)
def test_last_ffn_refit_is_the_closed_form_ridge_solution(family):
    """The last map's inputs do not depend on its own refit: its weights must solve the ridge problem on the
    inputs the reconstructed model feeds it and the original's outputs at the kept residual channels."""
    model, batches = CASES[family]()
    scores, target = random_scores(model), MERGED[family]
    pruner = UPPruner(model)
    plain = pruner.prune(target, scores)
    rebuilt = pruner.prune(target, scores, reconstruct=batches, show_progress=False)
    last = adapter_for(rebuilt).widths.num_hidden_layers - 1
    (x, _), = map_io(rebuilt, batches, [adapter_for(rebuilt).refit_maps(last)[1]])
    (_, y), = map_io(model, batches, [adapter_for(model).refit_maps(last)[1]])
    y = y[:, kept_residual(scores, target.hidden_size)]
    start = adapter_for(plain).refit_maps(last)[1]
    w, b = closed_form_ridge(x, y, start.matrix().detach(), start.bias.detach() if start.bias is not None else None,
                             RIDGE)
    fitted = adapter_for(rebuilt).refit_maps(last)[1]
    np.testing.assert_allclose(fitted.matrix().detach().double().numpy(), w, rtol=1e-4, atol=1e-4)
    if b is not None:
        np.testing.assert_allclose(fitted.bias.detach().double().numpy(), b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", CASES)
def test_each_refit_map_has_no_larger_error_on_the_proxy_set(family):
    model, batches = CASES[family]()
    scores, target = random_scores(model), MERGED[family]
    pruner = UPPruner(model)
    plain = pruner.prune(target, scores)
    rebuilt = pruner.prune(target, scores, reconstruct=batches, show_progress=False)
    kept = kept_residual(scores, target.hidden_size)
    inputs = map_io(rebuilt, batches, all_maps(rebuilt))
    targets = map_io(model, batches, all_maps(model))
    improved = 0
    for (x, _), (_, y), fitted, start in zip(inputs, targets, all_maps(rebuilt), all_maps(plain)):
        y = y[:, kept]

        def error(m):
            w = m.matrix().detach().double()
            out = x @ w.T + (m.bias.detach().double() if m.bias is not None else 0)
            return float(((out - y) ** 2).sum())

        before, after = error(start), error(fitted)
        assert after <= before * (1 + 1e-6), (before, after)
        improved += after < 0.99 * before
    assert improved >= len(inputs) // 2  # not a no-op


def test_classifier_refit_is_the_closed_form_ridge_solution():
    """The ViT classifier is refit last, on the features the reconstructed model gives it, to the original's logits."""
    model, batches = vit_case()
    scores, target = random_scores(model), MERGED["vit"]
    pruner = UPPruner(model)
    plain = pruner.prune(target, scores)
    rebuilt = pruner.prune(target, scores, reconstruct=batches, show_progress=False)
    x, _ = rows_of(rebuilt, batches, rebuilt.classifier, rebuilt.classifier)
    _, y = rows_of(model, batches, model.classifier, model.classifier)
    w, b = closed_form_ridge(x, y, plain.classifier.weight.detach(), plain.classifier.bias.detach(), RIDGE)
    np.testing.assert_allclose(rebuilt.classifier.weight.detach().double().numpy(), w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(rebuilt.classifier.bias.detach().double().numpy(), b, rtol=1e-4, atol=1e-4)


def test_tied_lm_head_stays_and_ln_f_is_refit_through_it(monkeypatch):
    """GPT-2's LM head is the input embedding: it must not change. ln_f's scale γ and shift β are refit instead,
    to the original's logits centred over the vocabulary; the reference writes out one row per (token, word)
    with features [H_c[v] ⊙ n_t, H_c[v]] and solves the ridge problem (penalty on γ only) with numpy."""
    monkeypatch.setattr(reconstruct_module, "CHUNK", 50)  # the logits go in slices of two rows
    model, batches = gpt2_case()
    scores, target = random_scores(model), MERGED["gpt2"]
    pruner = UPPruner(model)
    plain = pruner.prune(target, scores)
    rebuilt = pruner.prune(target, scores, reconstruct=batches, show_progress=False)
    assert rebuilt.lm_head.weight is rebuilt.transformer.wte.weight
    assert torch.equal(rebuilt.transformer.wte.weight, plain.transformer.wte.weight)

    x, _ = rows_of(rebuilt, batches, rebuilt.transformer.ln_f, rebuilt.lm_head)
    _, y = rows_of(model, batches, model.lm_head, model.lm_head)
    x, y = x.numpy(), y.numpy()
    eps = rebuilt.config.layer_norm_epsilon
    n = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + eps)
    head = plain.lm_head.weight.detach().double().numpy()
    centred = head - head.mean(0)
    rows, vocab, width = len(n), *head.shape
    design = np.concatenate([(centred[None] * n[:, None]).reshape(rows * vocab, width),
                             np.tile(centred, (rows, 1))], 1)
    goal = (y - y.mean(1, keepdims=True)).reshape(-1)
    lam = RIDGE * np.mean(np.sum(design[:, :width] ** 2, axis=0))
    penalty = np.diag(np.r_[np.full(width, lam), np.zeros(width)])
    prior = np.concatenate([p.detach().double().numpy() for p in (plain.transformer.ln_f.weight,
                                                                   plain.transformer.ln_f.bias)])
    coef = np.linalg.solve(design.T @ design + penalty, design.T @ goal + penalty @ prior)
    ln_f = rebuilt.transformer.ln_f
    np.testing.assert_allclose(ln_f.weight.detach().double().numpy(), coef[:width], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ln_f.bias.detach().double().numpy(), coef[width:], rtol=1e-4, atol=1e-4)

    def error(gamma, beta):  # squared error of the centred logits
        return float(((design @ np.r_[gamma, beta] - goal) ** 2).sum())

    before = error(prior[:width], prior[width:])
    after = error(ln_f.weight.detach().double().numpy(), ln_f.bias.detach().double().numpy())
    assert after < 0.99 * before, (before, after)


def test_untied_lm_head_is_refit_itself():
    """Without tying, the LM head is an ordinary map: it is refit (closed form as for any map) and ln_f is not."""
    config = gpt2_config(n_embd=12, n_head=4, n_inner=16, tie_word_embeddings=False)
    model = randomize(GPT2LMHeadModel(config), std=0.2)
    batches = token_batches(config, lengths=((6, 4, 5), (6, 6), (3, 6)))
    scores, target = random_scores(model), MERGED["gpt2"]
    plain = UPPruner(model).prune(target, scores)
    rebuilt = UPPruner(model).prune(target, scores, reconstruct=batches, show_progress=False)
    assert torch.equal(rebuilt.transformer.wte.weight, plain.transformer.wte.weight)
    assert torch.equal(rebuilt.transformer.ln_f.weight, plain.transformer.ln_f.weight)
    x, _ = rows_of(rebuilt, batches, rebuilt.lm_head, rebuilt.lm_head)
    _, y = rows_of(model, batches, model.lm_head, model.lm_head)
    w, _ = closed_form_ridge(x, y, plain.lm_head.weight.detach(), None, RIDGE)
    np.testing.assert_allclose(rebuilt.lm_head.weight.detach().double().numpy(), w, rtol=1e-4, atol=1e-4)


def test_reconstruction_is_recorded():
    model, batches = vit_case()
    rebuilt = UPPruner(model).prune(MERGED["vit"], random_scores(model), reconstruct=iter(batches),
                                    show_progress=False)
    step = getattr(rebuilt.config, RECORD_KEY)["steps"][-1]
    assert step["reconstruction"]["proxy_size"] == 8 + 8 + 6
    assert step["reconstruction"]["refit_maps"] == 2 * 2 + 1  # two per layer, and the classifier
    assert step["reconstruction"]["ridge"] == RIDGE


def test_empty_proxy_is_refused():
    model, _ = vit_case()
    with pytest.raises(ValueError, match="empty"):
        UPPruner(model).prune(MERGED["vit"], random_scores(model), reconstruct=[], show_progress=False)


FRESH_LOAD = textwrap.dedent("""
    import sys, torch
    from transformers import AutoModelForCausalLM, AutoModelForImageClassification
    auto = AutoModelForImageClassification if sys.argv[4] == "image" else AutoModelForCausalLM
    model = auto.from_pretrained(sys.argv[1]).eval()
    batch = torch.load(sys.argv[2])
    with torch.no_grad():
        torch.save(model(**batch).logits, sys.argv[3])
    assert "upvit_hf" not in sys.modules
    print(model.config.upvit_pruning["steps"][-1]["reconstruction"]["proxy_size"])
""")


@pytest.mark.parametrize("family,kind", [("vit", "image"), ("gpt2", "text")])
def test_reconstructed_model_reloads_in_a_fresh_interpreter(family, kind, tmp_path):
    model, batches = CASES[family]()
    rebuilt = UPPruner(model).prune(MERGED[family], random_scores(model), reconstruct=batches, show_progress=False)
    rebuilt.save_pretrained(tmp_path / "model")
    batch = inputs_of(batches[0])
    torch.save(batch, tmp_path / "x.pt")
    out = subprocess.run([sys.executable, "-c", FRESH_LOAD, str(tmp_path / "model"), str(tmp_path / "x.pt"),
                          str(tmp_path / "y.pt"), kind], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) == sum(len(b[next(iter(b))]) for b in batches)
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), run(rebuilt, batch).logits, rtol=0, atol=0)


def test_reconstructed_transfo_xl_reloads(tmp_path):
    from transformers import AutoModelForCausalLM

    model, batches = txl_case()
    rebuilt = UPPruner(model).prune(MERGED["transfo-xl"], random_scores(model), reconstruct=batches,
                                    show_progress=False)
    rebuilt.save_pretrained(tmp_path / "model")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    ids = batches[0]["input_ids"]
    torch.testing.assert_close(run(reloaded, {"input_ids": ids}).logits, run(rebuilt, {"input_ids": ids}).logits,
                               rtol=0, atol=0)


def test_cli_prune_reconstruct(assets, tmp_path):
    common = ["prune", "--model", assets / "base", "--dataset", assets / "data", "--proxy-size", 6,
              "--method", "magnitude", "--ratio", 0.5]
    upvit(*common, "--output", tmp_path / "plain")
    upvit(*common, "--reconstruct", "--output", tmp_path / "recon")
    plain = AutoModelForImageClassification.from_pretrained(tmp_path / "plain")
    recon = AutoModelForImageClassification.from_pretrained(tmp_path / "recon")
    assert recon.config.upvit_pruning["steps"][-1]["reconstruction"]["proxy_size"] == 6
    assert "reconstruction" not in plain.config.upvit_pruning["steps"][-1]
    assert not torch.equal(plain.vit.layers[0].mlp.fc2.weight, recon.vit.layers[0].mlp.fc2.weight)
    assert torch.equal(plain.vit.layers[0].mlp.fc1.weight, recon.vit.layers[0].mlp.fc1.weight)  # inputs untouched
    upvit("prune", "--model", assets / "base", "--dataset", assets / "data", "--proxy-size", 6, "--num-layers", 1,
          "--reconstruct", "--output", tmp_path / "shallow")
    shallow = AutoModelForImageClassification.from_pretrained(tmp_path / "shallow")
    assert shallow.config.upvit_pruning["steps"][-1]["reconstruction"]["proxy_size"] == 6


@pytest.mark.parametrize("family", CASES)
def test_depth_pruning_refits_the_branches_after_the_removed_unit(family):
    """After removing one unit, the maps of every later branch are refit (error on the proxy set no larger than
    the removal left, measured here), the earlier ones are left exactly as they were."""
    model, batches = CASES[family]()
    layers = adapter_for(model).widths.num_hidden_layers
    plain = UPPruner(model).prune_blocks(batches, num_hidden_layers=layers - 1, show_progress=False)
    rebuilt = UPPruner(model).prune_blocks(batches, num_hidden_layers=layers - 1, show_progress=False,
                                           reconstruct=True)
    removed = plain.config.upvit_pruning["steps"][-1]["removed"][0]
    first = 2 * removed["layers"][0] + (removed["unit"] == "hybrid")  # first removed branch
    maps_plain, maps_rebuilt, maps_original = all_maps(plain), all_maps(rebuilt), all_maps(model)
    inputs = map_io(rebuilt, batches, maps_rebuilt)
    targets = map_io(model, batches, maps_original)
    for k, (start, fitted) in enumerate(zip(maps_plain, maps_rebuilt)):
        if k < first:
            assert torch.equal(start.module.weight, fitted.module.weight)
            continue
        x, y = inputs[k][0], targets[k + 2][1]  # branch k of the reduced model was branch k + 2

        def error(m):
            out = x @ m.matrix().detach().double().T + (m.bias.detach().double() if m.bias is not None else 0)
            return float(((out - y) ** 2).sum())

        assert error(fitted) <= error(start) * (1 + 1e-6)
        assert not torch.equal(start.module.weight, fitted.module.weight)
    step = rebuilt.config.upvit_pruning["steps"][-1]
    assert step["reconstruction"]["refit_maps"] == 2 * layers - 2 - first + len(adapter_for(model).readout_maps())
