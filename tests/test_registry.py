"""The adapter registry: a checkpoint loads as the class it was saved as, pruning keeps that class and its heads,
an unsupported class is refused in one line, and every family fact the registry states is true of the models."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from tiny import deit_config, gpt2_config, pvt_v2_config, randomize, tiny_tokenizer, vit_config
from transformers import (
    GPT2DoubleHeadsModel,
    GPT2ForTokenClassification,
    ViTForMaskedImageModeling,
    ViTImageProcessor,
)

from upvit_hf.adapters import ADAPTERS, REGISTRY, adapter_for
from upvit_hf.cli import main
from upvit_hf.cli.common import load_model
from upvit_hf.evaluation import dummy_inputs, max_positions
from upvit_hf.models.transfo_xl import TransfoXLConfig, TransfoXLLMHeadModel


def _save_mim(folder):
    model = randomize(ViTForMaskedImageModeling(vit_config(encoder_stride=4)))
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(folder)
    return model, lambda m: m.decoder[0].weight, lambda m: m.vit.layernorm.weight


def _save_double_heads(folder):
    model = randomize(GPT2DoubleHeadsModel(gpt2_config()))
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return model, lambda m: m.multiple_choice_head.summary.weight, lambda m: m.transformer.ln_f.weight


HEADED = {"ViTForMaskedImageModeling": _save_mim, "GPT2DoubleHeadsModel": _save_double_heads}


@pytest.mark.parametrize("name", HEADED)
def test_checkpoint_loads_and_prunes_as_its_own_class(name, tmp_path, capsys):
    """Before the registry the CLI loaded these as ViTModel / GPT2Model: the heads were silently dropped."""
    original, head_of, final_norm_of = HEADED[name](tmp_path / "base")
    loaded = load_model(str(tmp_path / "base"))
    assert type(loaded) is type(original)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in original.state_dict().items())

    main(["prune", "--model", str(tmp_path / "base"), "--ratio", "0.5", "--method", "magnitude",
          "--output", str(tmp_path / "pruned")])
    assert json.loads((tmp_path / "pruned" / "config.json").read_text())["architectures"] == [name]
    pruned = type(original).from_pretrained(tmp_path / "pruned")  # stock loader: no missing/new head weights
    # the kept residual channels, read off the (randomized, all-distinct) final LayerNorm weights
    old_norm, new_norm = final_norm_of(original), final_norm_of(pruned)
    kept = torch.tensor([int((old_norm == v).nonzero()) for v in new_norm])
    assert len(kept) == len(old_norm) // 2
    torch.testing.assert_close(head_of(pruned), head_of(original)[:, kept], rtol=0, atol=0)


def test_double_heads_readout_is_the_language_model_distribution():
    """Scoring a GPT2DoubleHeadsModel compares its language-model logits, exactly what its forward returns."""
    model = randomize(GPT2DoubleHeadsModel(gpt2_config()))
    adapter = adapter_for(model)
    ids = torch.randint(3, 23, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden, context = adapter.embed({"input_ids": ids})
        for branch in adapter.branches():
            hidden = branch(hidden, context)
        torch.testing.assert_close(adapter.readout(hidden, context), model(input_ids=ids).logits)


def test_masked_image_modeling_is_refused_for_kl_scoring():
    adapter = adapter_for(ViTForMaskedImageModeling(vit_config(encoder_stride=4)))
    with pytest.raises(ValueError, match="no output distribution"):
        adapter.check_scorable()


def test_unsupported_class_is_refused_in_one_line(tmp_path, capsys):
    GPT2ForTokenClassification(gpt2_config()).save_pretrained(tmp_path / "base")
    tiny_tokenizer().save_pretrained(tmp_path / "base")
    capsys.readouterr()  # drop the save's progress bar
    with pytest.raises(SystemExit) as exit_info:
        main(["prune", "--model", str(tmp_path / "base"), "--ratio", "0.5", "--method", "magnitude",
              "--output", str(tmp_path / "pruned")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "GPT2ForTokenClassification is not supported; supported models:" in err
    assert all(cls.__name__ in err for adapter in ADAPTERS for cls in adapter.model_classes)
    assert not (tmp_path / "pruned").exists()


# ---- the facts the registry states are true of the models ------------------------------------------------
def _txl_config() -> TransfoXLConfig:
    return TransfoXLConfig(vocab_size=30, cutoffs=[8, 16], d_model=12, d_embed=16, n_head=2, d_head=4, d_inner=16,
                           div_val=2, n_layer=2, mem_len=3)


def _instances():
    """One tiny model of every supported class."""
    configs = {"vit": vit_config(encoder_stride=4), "deit": deit_config(encoder_stride=4), "gpt2": gpt2_config(),
               "transfo-xl": _txl_config(), "pvt_v2": pvt_v2_config()}
    for model_type, adapter in REGISTRY.items():
        for cls in adapter.model_classes:
            if cls.config_class.model_type == model_type:
                yield adapter, cls(configs[model_type])


def test_registry_keys_every_adapter_once_and_states_every_fact():
    assert len(REGISTRY) == sum(len(a.model_types) for a in ADAPTERS)  # no model_type claimed twice
    for adapter in ADAPTERS:
        assert adapter.modality in ("image", "text")
        assert isinstance(adapter.uses_memory, bool) and isinstance(adapter.needs_remote_code, bool)


def test_modality_memory_and_dummy_inputs_match_each_model():
    for adapter, model in _instances():
        forward = inspect.signature(type(model).forward).parameters
        assert ("mems" in forward) == adapter.uses_memory, type(model).__name__
        assert ("pixel_values" if adapter.modality == "image" else "input_ids") in forward
        inputs = dummy_inputs(model, 2, seq_len=64)
        with torch.no_grad():
            model.eval()(**inputs)  # the shapes the adapter reads off the config are ones the model accepts


def test_max_positions_is_the_real_context_limit():
    model = GPT2DoubleHeadsModel(gpt2_config(n_positions=12)).eval()
    assert max_positions(model) == 12
    assert dummy_inputs(model, 1, seq_len=100)["input_ids"].shape == (1, 12)
    with torch.no_grad():
        model(input_ids=torch.zeros(1, 12, dtype=torch.long))
        with pytest.raises(IndexError):
            model(input_ids=torch.zeros(1, 13, dtype=torch.long))


FRESH_CONFIG_LOAD = textwrap.dedent("""
    import json, sys
    from transformers import AutoConfig
    loads = {}
    for folder in sys.argv[1:]:
        try:
            AutoConfig.from_pretrained(folder, trust_remote_code=False)
            loads[folder] = True
        except (ValueError, KeyError, OSError):
            loads[folder] = False
    assert "upvit_hf" not in sys.modules
    print(json.dumps(loads))
""")


def test_needs_remote_code_is_what_stock_transformers_cannot_load(tmp_path):
    folders = {}
    for adapter, model in _instances():
        folder = tmp_path / type(model).__name__
        model.config.save_pretrained(folder)
        folders[str(folder)] = adapter.needs_remote_code
    out = subprocess.run([sys.executable, "-c", FRESH_CONFIG_LOAD, *folders], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, check=True).stdout
    loads = json.loads(out.strip().splitlines()[-1])
    assert {folder: not loads[folder] for folder in folders} == folders
    assert any(folders.values()) and not all(folders.values())


def test_transfo_xl_loads_as_its_class_after_import(tmp_path):
    model = randomize(TransfoXLLMHeadModel(_txl_config()))
    model.save_pretrained(tmp_path)
    assert type(load_model(str(tmp_path))) is TransfoXLLMHeadModel


CARD_SNIPPET_RUN = textwrap.dedent("""
    import re, sys
    code = re.search(r"```python\\n(.*?)```", open(sys.argv[1] + "/README.md").read(), re.S).group(1)
    scope = {}
    exec(code.replace("path/to/this/model", sys.argv[1]), scope)
    print(type(scope["model"]).__name__)
""")


# (Transformer-XL's snippet, with trust_remote_code and its tokenizer: tests/test_transfo_xl_cli.py)
@pytest.mark.parametrize("make", [
    lambda: ViTForMaskedImageModeling(vit_config(encoder_stride=4)),
    lambda: GPT2DoubleHeadsModel(gpt2_config()),
], ids=["mim-auto-class", "double-heads-own-class"])
def test_model_card_snippet_loads_the_saved_class_in_a_fresh_interpreter(make, tmp_path):
    from upvit_hf.model_card import write_model_card
    from upvit_hf.record import RECORD_KEY

    model = make()
    setattr(model.config, RECORD_KEY, {"base_model": None, "method": "magnitude"})
    model.save_pretrained(tmp_path)
    write_model_card(tmp_path)
    out = subprocess.run([sys.executable, "-c", CARD_SNIPPET_RUN, str(tmp_path)], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, check=True).stdout
    assert out.strip().splitlines()[-1] == type(model).__name__


def test_recipes_refuse_a_student_their_auto_class_would_give_a_new_head(tmp_path):
    """`AutoModelForCausalLM.from_pretrained` on a GPT2Model checkpoint adds a randomly initialized LM head; the
    recipes load the saved class and refuse it instead."""
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel, GPT2Model

    from upvit_hf.recipes.common import DistillationModelArguments, load_student_and_teacher

    GPT2Model(gpt2_config()).save_pretrained(tmp_path / "student")
    GPT2LMHeadModel(gpt2_config()).save_pretrained(tmp_path / "teacher")
    args = DistillationModelArguments(student=str(tmp_path / "student"), teacher=str(tmp_path / "teacher"))
    with pytest.raises(ValueError, match="the student .* is a GPT2Model; this recipe distils models that "
                                         "AutoModelForCausalLM loads"):
        load_student_and_teacher(args, AutoModelForCausalLM)
    args.student = args.teacher
    student, teacher = load_student_and_teacher(args, AutoModelForCausalLM)
    assert type(student) is type(teacher) is GPT2LMHeadModel
