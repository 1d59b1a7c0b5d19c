"""The proxy pass at scale, in one process: dtype policy, checkpoints and their refusals, devices, TF32 flags."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny import gpt2_config, image_batches, randomize, token_batches, vit_config
from transformers import GPT2LMHeadModel, ViTForImageClassification

from upvit_hf import UPPruner
from upvit_hf.scoring import exact
from upvit_hf.scoring.proxy_pass import exact_float32_matmul


def tiny_vit(seed: int = 0, **overrides) -> ViTForImageClassification:
    return randomize(ViTForImageClassification(vit_config(**overrides)), seed=seed)


def flat(scores) -> torch.Tensor:
    return torch.cat([scores.residual, *scores.attention, *scores.ffn])


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs()).max())


def snapshot(model: torch.nn.Module) -> dict[str, tuple[int, torch.dtype, torch.Tensor]]:
    return {name: (id(t), t.dtype, t.detach().clone()) for name, t in [*model.named_parameters(),
                                                                      *model.named_buffers()]}


def assert_unchanged(model: torch.nn.Module, before: dict) -> None:
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        identity, dtype, values = before[name]
        assert id(tensor) == identity and tensor.dtype == dtype, name
        assert torch.equal(tensor, values), name


# ---- dtype policy ---------------------------------------------------------------------------------------


def test_bf16_model_scores_in_float32_and_is_given_back_untouched():
    model = tiny_vit().to(torch.bfloat16)
    before = snapshot(model)
    batches = image_batches(model.config, sizes=(3, 2))
    scores = UPPruner(model).score(batches, variants_per_pass=5, show_progress=False)
    assert_unchanged(model, before)
    # the reference: the same bf16-rounded weights, cast to float32 by the test itself
    reference = UPPruner(copy.deepcopy(model).float()).score(batches, variants_per_pass=5, show_progress=False)
    assert max_rel(flat(scores), flat(reference)) < 1e-4
    # what the policy prevents: scoring in bf16 (an explicit opt-in) is far off
    in_bf16 = UPPruner(model).score(batches, variants_per_pass=5, show_progress=False, dtype=torch.bfloat16)
    assert max_rel(flat(in_bf16), flat(reference)) > 1e-2
    assert_unchanged(model, before)


def test_narrowing_opt_in_gives_a_float32_model_back_exactly():
    model = tiny_vit()
    before = snapshot(model)
    UPPruner(model).score(image_batches(model.config, sizes=(2,)), show_progress=False, dtype=torch.float16)
    assert_unchanged(model, before)


def test_bad_dtype_and_scale_options_on_baselines_are_refused():
    model = tiny_vit()
    with pytest.raises(ValueError, match="dtype must be one of"):
        UPPruner(model).score(image_batches(model.config), dtype=torch.int8)
    with pytest.raises(ValueError, match="only apply to method='kl'"):
        UPPruner(model).score(method="magnitude", checkpoint="x.ckpt")
    with pytest.raises(ValueError, match="variants_per_pass"):
        UPPruner(model).score(image_batches(model.config), variants_per_pass="many")


# ---- checkpoints ----------------------------------------------------------------------------------------


def test_resume_from_a_partial_checkpoint_scores_only_the_rest(tmp_path, monkeypatch):
    model = randomize(GPT2LMHeadModel(gpt2_config())).double()
    batches = token_batches(model.config, lengths=((6, 4), (5, 6, 3), (6,), (2, 6)))
    whole = UPPruner(model).score(batches, show_progress=False)

    path = tmp_path / "run.ckpt"
    UPPruner(model).score(batches[:2], show_progress=False, checkpoint=path, checkpoint_every=1)
    scored = []
    original = exact.ExactKLScorer._score_batch
    monkeypatch.setattr(exact.ExactKLScorer, "_score_batch",
                        lambda self, inputs, *a: scored.append(1) or original(self, inputs, *a))
    resumed = UPPruner(model).score(batches, show_progress=False, checkpoint=path, checkpoint_every=1)
    assert len(scored) == 2  # batches 0 and 1 came from the checkpoint
    assert resumed.meta["proxy_size"] == whole.meta["proxy_size"] == 8
    torch.testing.assert_close(flat(resumed), flat(whole), rtol=1e-12, atol=0)
    again = UPPruner(model).score(batches, show_progress=False, checkpoint=path)  # finished: nothing to score
    assert len(scored) == 2 and torch.equal(flat(again), flat(resumed))


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    model = tiny_vit()
    batches = image_batches(model.config, sizes=(2, 2))
    path = tmp_path / "run.ckpt"
    UPPruner(model).score(batches, show_progress=False, checkpoint=path)
    with pytest.raises(ValueError, match=r"different scoring run \(it differs in model\)"):
        UPPruner(tiny_vit(seed=1)).score(batches, show_progress=False, checkpoint=path)
    narrower = tiny_vit(intermediate_size=20)
    with pytest.raises(ValueError, match="differs in model, sums, widths"):
        UPPruner(narrower).score(batches, show_progress=False, checkpoint=path)
    with pytest.raises(ValueError, match="differs in method, sums"):
        UPPruner(model).score_blocks(batches, show_progress=False, checkpoint=path)
    with pytest.raises(ValueError, match="differs in dtype"):
        UPPruner(model).score(batches, show_progress=False, checkpoint=path, dtype=torch.float64)
    other = image_batches(model.config, sizes=(2, 2), seed=5)
    with pytest.raises(ValueError, match="proxy batch 0 differs"):
        UPPruner(model).score(other, show_progress=False, checkpoint=path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        UPPruner(model).score(batches, show_progress=False, checkpoint=path)


def test_bad_checkpoint_every_is_refused():
    model = tiny_vit()
    with pytest.raises(ValueError, match="checkpoint_every"):
        UPPruner(model).score(image_batches(model.config), checkpoint="x", checkpoint_every=0)


def test_prune_blocks_resumes_every_step_from_its_checkpoint(tmp_path, monkeypatch):
    model = randomize(ViTForImageClassification(vit_config(num_hidden_layers=3))).double()
    batches = image_batches(model.config, sizes=(2, 3))
    path = tmp_path / "depth.ckpt"
    first = UPPruner(model).prune_blocks(batches, 1, show_progress=False, checkpoint=path)
    assert (tmp_path / "depth.ckpt.step0").exists() and (tmp_path / "depth.ckpt.step1").exists()
    from upvit_hf.scoring import blocks

    monkeypatch.setattr(blocks.BlockKLScorer, "_score_batch", lambda *a: pytest.fail("rescored a finished step"))
    again = UPPruner(model).prune_blocks(batches, 1, show_progress=False, checkpoint=path)
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


# ---- devices and flags ----------------------------------------------------------------------------------


def test_a_model_spread_over_devices_is_refused_with_the_way_out():
    model = tiny_vit()
    model.hf_device_map = {"vit.embeddings": 0, "vit.layers.0": 0, "vit.layers.1": 1, "classifier": 1}
    with pytest.raises(ValueError, match=r"spread over several devices \(0, 1, cpu\).*data parallelism"):
        UPPruner(model).score(image_batches(model.config))
    model.hf_device_map = {"": "cpu"}  # one device through device_map: fine
    scores = UPPruner(model).score(image_batches(model.config), show_progress=False)
    reference = UPPruner(tiny_vit()).score(image_batches(model.config), show_progress=False)
    assert torch.equal(flat(scores), flat(reference))


def test_auto_variants_per_pass_gives_the_same_scores():
    model = tiny_vit().double()
    batches = image_batches(model.config)
    auto = UPPruner(model).score(batches, variants_per_pass="auto", show_progress=False)
    fixed = UPPruner(model).score(batches, variants_per_pass=3, show_progress=False)
    torch.testing.assert_close(flat(auto), flat(fixed), rtol=1e-9, atol=0)


@pytest.mark.parametrize("allow_tf32", [False, True])
def test_tf32_is_off_while_scoring_on_cuda_and_restored(allow_tf32):
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = matmul.fp32_precision, conv.fp32_precision
    try:
        matmul.fp32_precision, conv.fp32_precision = "tf32", "tf32"  # a user who enabled TF32
        with exact_float32_matmul(torch.device("cuda"), allow_tf32):
            inside = matmul.fp32_precision, conv.fp32_precision
        assert inside == (("tf32", "tf32") if allow_tf32 else ("ieee", "ieee"))
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
        with exact_float32_matmul(torch.device("cpu"), allow_tf32):  # nothing to do on a CPU
            assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved


# ---- command line -----------------------------------------------------------------------------------------


def test_cli_checkpoint_resumes_and_refuses_another_proxy_in_one_line(tmp_path, capsys):
    from test_scale_processes import cli_assets

    from upvit_hf import ImportanceScores
    from upvit_hf.cli import main

    cli_assets(tmp_path)
    common = ["score", "--model", str(tmp_path / "model"), "--dataset", str(tmp_path / "data"), "--proxy-size", "10",
              "--batch-size", "3", "--checkpoint", str(tmp_path / "run.ckpt")]
    main([*common, "--checkpoint-every", "1", "--output", str(tmp_path / "a.safetensors")])
    assert sorted(torch.load(tmp_path / "run.ckpt", weights_only=True)["done"]) == [0, 1, 2, 3]
    main([*common, "--output", str(tmp_path / "b.safetensors")])  # finished: read back from the checkpoint
    a, b = (ImportanceScores.load(tmp_path / f"{n}.safetensors") for n in "ab")
    assert torch.equal(flat(a), flat(b)) and a.meta["proxy_size"] == b.meta["proxy_size"] == 10
    capsys.readouterr()
    for extra, message in ((["--seed", "1"], "proxy batch 0 differs"),
                           (["--method", "magnitude"], "only apply to method='kl'")):
        with pytest.raises(SystemExit) as exit_info:
            main([*common, *extra, "--output", str(tmp_path / "c.safetensors")])
        err = capsys.readouterr().err  # (transformers' loading bars go to stderr too)
        errors = [line for line in err.splitlines() if line.startswith("upvit score: error:")]
        assert exit_info.value.code == 2 and "Traceback" not in err and len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "c.safetensors").exists()
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "--variants-per-pass", "0", "--output", str(tmp_path / "c.safetensors")])
    assert exit_info.value.code == 2 and "positive integer or 'auto'" in capsys.readouterr().err


def test_a_loader_accelerate_already_sharded_is_refused(monkeypatch):
    from accelerate.data_loader import DataLoaderShard

    from upvit_hf.scoring import proxy_pass

    model = tiny_vit()
    monkeypatch.setattr(proxy_pass, "world", lambda: (0, 2))  # as if launched on two processes
    loader = DataLoaderShard(image_batches(model.config), batch_size=None)
    with pytest.raises(ValueError, match=r"not accelerator.prepare\(loader\)"):
        UPPruner(model).score(loader, show_progress=False)
