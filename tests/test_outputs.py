"""Nothing the user made is lost: existing outputs are refused unless overwrite is asked for, and replaced only
once the new content is complete."""

from __future__ import annotations

import pytest
import torch
from tiny import randomize, vit_config
from transformers import AutoModelForImageClassification, ViTForImageClassification, ViTImageProcessor

from upvit_hf import ImportanceScores
from upvit_hf.atomic import atomic_path
from upvit_hf.cli import main


def user_folder(path):
    path.mkdir()
    (path / "notes.txt").write_text("my own work")
    return path


def test_existing_folder_is_refused_and_kept(tmp_path):
    folder = user_folder(tmp_path / "out")
    with pytest.raises(ValueError, match="overwrite"):
        with atomic_path(folder, directory=True) as tmp:
            (tmp / "new.txt").write_text("new")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left behind


def test_overwrite_replaces_only_when_complete(tmp_path):
    folder = user_folder(tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(folder, directory=True, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("half")
            raise KeyboardInterrupt  # the user presses Ctrl-C in the middle of the write
    assert (folder / "notes.txt").read_text() == "my own work" and not (folder / "new.txt").exists()

    with atomic_path(folder, directory=True, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (folder / "notes.txt").exists()  # still there while the new content is written
    assert [p.name for p in folder.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_empty_folder_and_missing_path_need_no_overwrite(tmp_path):
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "empty", tmp_path / "deep" / "new"):
        with atomic_path(target, directory=True) as tmp:
            (tmp / "x.txt").write_text("x")
        assert (target / "x.txt").read_text() == "x"


def test_files_follow_the_same_rule(tmp_path):
    file = tmp_path / "scores.safetensors"
    file.write_text("precious")
    scores = ImportanceScores(torch.rand(4), [torch.rand(4)], [torch.rand(6)])
    with pytest.raises(ValueError, match="overwrite"):
        scores.save(file)
    assert file.read_text() == "precious"
    scores.save(file, overwrite=True)
    torch.testing.assert_close(ImportanceScores.load(file).residual, scores.residual, rtol=0, atol=0)


def test_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    ImportanceScores(torch.rand(4), [torch.rand(4)], [torch.rand(6)]).save("~/s.safetensors")
    assert (tmp_path / "s.safetensors").is_file() and ImportanceScores.load("~/s.safetensors").num_layers == 1


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    randomize(ViTForImageClassification(vit_config())).save_pretrained(root / "base")
    ViTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(root / "base")
    return root / "base"


def prune(model, output, *extra):
    main(["prune", "--model", str(model), "--method", "magnitude", "--ratio", "0.5", "--output", str(output),
          *extra])


def test_cli_prune_keeps_a_user_folder_without_overwrite(model_folder, tmp_path, capsys):
    folder = user_folder(tmp_path / "mine")
    with pytest.raises(SystemExit) as exit_info:
        prune(model_folder, folder)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0] and "Traceback" not in err[0]
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]

    prune(model_folder, folder, "--overwrite")
    assert not (folder / "notes.txt").exists()
    assert AutoModelForImageClassification.from_pretrained(folder).config.hidden_size == 8


def test_cli_demo_refuses_a_non_empty_output(tmp_path, capsys):
    folder = user_folder(tmp_path / "demo")
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--quick", "--output", str(folder)])
    assert exit_info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
