"""`python -m tlbench.predict <run> <images>`: a model saved the way a run saves it, real JPEG
files, and the printed lines and CSV checked against a direct forward pass of the same model."""

import csv
import json

import pytest
import torch
from PIL import Image

from tlbench.data import augment
from tlbench.models import export
from tlbench import models, predict
from tlbench.errors import ConfigError, DataNotFoundError, WeightsMismatchError

CLASSES = ["cat", "dog", "bird"]
SIZE = 32
# test_resnet: timm's smallest ResNet (0.4 M parameters), so building one takes well under a second.
META = {"model": {"name": "test_resnet", "source": "timm", "kwargs": None}, "classes": CLASSES,
        "preprocessing": {"image_size": SIZE, "input_size": SIZE, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        "run_id": "abc123", "epoch": 2, "which": "final", "test_acc": 0.5}


def trained_model() -> torch.nn.Module:
    """Stands in for a trained run: timm's random head, so classes get different probabilities."""
    torch.manual_seed(0)
    built = models.build_model(name="test_resnet", source="timm", num_classes=len(CLASSES), pretrained=False,
                               head_init="library")
    return built.model.eval()


@pytest.fixture
def run_folder(tmp_path):
    """A run folder as run.py leaves it: model.json + model.safetensors (and the best epoch's)."""
    folder = tmp_path / "results" / "run"
    model = trained_model()
    export.save_model(folder, "model", model.state_dict(), META)
    export.save_model(folder, "best", model.state_dict(), {**META, "which": "best", "epoch": 1})
    return folder, model


@pytest.fixture
def photos(tmp_path):
    """photos/a.jpg, photos/B.JPG, photos/sub/c.png at sizes unlike the model's, and a notes.txt."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    generator = torch.Generator().manual_seed(1)
    for name, size in (("a.jpg", (40, 30)), ("B.JPG", (64, 64)), ("sub/c.png", (20, 50))):
        pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def oracle(model, paths, top_k):
    """The same model on the same preprocessing, without predict.py."""
    transform = augment.eval_transform(SIZE, META["preprocessing"]["mean"], META["preprocessing"]["std"], SIZE)
    images = torch.stack([transform(Image.open(path).convert("RGB")) for path in paths])
    with torch.no_grad():
        top = torch.softmax(model(images), dim=1).topk(top_k, dim=1)
    return [([CLASSES[i] for i in indices], values) for values, indices in zip(top.values.tolist(), top.indices.tolist())]


def parse_line(line):
    path, ranked = line.split(": ", 1)
    pairs = [part.rsplit(" ", 1) for part in ranked.split(" | ")]
    return path, [name for name, _ in pairs], [float(prob.rstrip("%")) / 100 for _, prob in pairs]


def test_saved_model_round_trips_from_the_run_folder_or_its_json(run_folder):
    folder, model = run_folder
    card = json.loads((folder / "model.json").read_text())
    assert card["format"] == "tlbench-model/1" and card["weights"] == "model.safetensors"
    assert card["classes"] == CLASSES and card["preprocessing"] == META["preprocessing"]
    for source, which in ((folder, "final"), (folder / "model.json", "final"), (folder, "best")):
        loaded, meta = export.load_model(source, which)
        assert not loaded.training and meta["which"] == which
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key


def test_channels_last_weights_are_saved_contiguous(tmp_path):
    model = models.channels_last(trained_model())
    weight = model.state_dict()["conv1.0.weight"]
    assert not weight.is_contiguous()  # safetensors refuses such a tensor as it is
    export.save_model(tmp_path, "model", model.state_dict(), META)
    loaded, _ = export.load_model(tmp_path)
    assert torch.equal(loaded.state_dict()["conv1.0.weight"], weight)


def test_predict_prints_top_k_matching_a_direct_forward_pass(run_folder, photos, tmp_path, capsys):
    folder, model = run_folder
    out = tmp_path / "out.csv"
    assert predict.main([str(folder), str(photos), "--top-k", "2", "--csv", str(out), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected_paths = [photos / "B.JPG", photos / "a.jpg", photos / "sub" / "c.png"]  # sorted, notes.txt left out
    assert [parse_line(line)[0] for line in lines] == [str(path) for path in expected_paths]
    for line, (names, probs) in zip(lines, oracle(model, expected_paths, top_k=2)):
        _, printed_names, printed_probs = parse_line(line)
        assert printed_names == names
        assert printed_probs == pytest.approx(probs, abs=0.0006)  # printed to 0.1%
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "top1_class", "top1_prob", "top2_class", "top2_prob"]
    assert [row["path"] for row in rows] == [str(path) for path in expected_paths]
    for row, (names, probs) in zip(rows, oracle(model, expected_paths, top_k=2)):
        assert [row["top1_class"], row["top2_class"]] == names
        assert [float(row["top1_prob"]), float(row["top2_prob"])] == pytest.approx(probs, abs=1e-5)


def test_all_classes_probabilities_sum_to_one(run_folder, photos, capsys):
    folder, _ = run_folder
    image = photos / "a.jpg"
    assert predict.main([str(folder / "best.json"), str(image), "--top-k", "10", "--which", "best"]) == 0
    path, names, probs = parse_line(capsys.readouterr().out.strip())
    assert path == str(image) and sorted(names) == sorted(CLASSES)  # top-k capped at the 3 classes
    assert sum(probs) == pytest.approx(1.0, abs=0.002)


def test_a_folder_writes_predictions_csv_in_the_current_folder_not_the_image_folder(run_folder, photos, tmp_path,
                                                                                    monkeypatch):
    folder, _ = run_folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert predict.main([str(folder), str(photos / "a.jpg")]) == 0
    assert not (elsewhere / "predictions.csv").exists()  # single files: printed only
    assert predict.main([str(folder), str(photos), "--batch-size", "2"]) == 0
    with open(elsewhere / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and len(rows[0]) == 1 + 2 * len(CLASSES)  # top-k 5 capped at 3 classes
    assert not list(photos.rglob("*.csv"))


def test_undecodable_files_in_a_folder_are_skipped_and_named(run_folder, photos, capsys):
    folder, _ = run_folder
    (photos / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert predict.main([str(folder), str(photos), "--csv", str(photos.parent / "p.csv")]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3
    assert "broken.jpg" not in captured.out
    assert f"skipped 1 of 4 file(s) that cannot be decoded:\n  {photos / 'sub' / 'broken.jpg'}" in captured.err


def test_nothing_decodable_or_a_named_bad_file_exits_2(run_folder, photos, tmp_path, capsys):
    folder, _ = run_folder
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.png").write_text("text")
    assert predict.main([str(folder), str(junk), "--csv", str(tmp_path / "p.csv")]) == 2
    assert "none of the 1 image file(s) could be decoded" in capsys.readouterr().err
    assert predict.main([str(folder), str(photos / "a.jpg"), str(junk / "x.png")]) == 2  # the good one still printed
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{photos / 'a.jpg'}: ") and str(junk / "x.png") in captured.err


def test_a_run_folder_without_a_model_exits_2_naming_it(tmp_path, photos, capsys):
    failed_run = tmp_path / "failed_run"
    failed_run.mkdir()
    (failed_run / "result.json").write_text("{}")
    assert predict.main([str(failed_run), str(photos)]) == 2
    err = capsys.readouterr().err
    assert f"{failed_run} holds no saved model (model.json)" in err and "save_model=false" in err
    assert "Traceback" not in err


def test_a_sweep_folder_points_to_its_runs(run_folder, photos, capsys):
    folder, _ = run_folder
    assert predict.main([str(folder.parent), str(photos)]) == 2
    assert f"give one of its runs, e.g. {folder}" in capsys.readouterr().err


def test_a_path_that_does_not_exist_exits_2(run_folder, photos, tmp_path, capsys):
    folder, _ = run_folder
    assert predict.main([str(folder), str(tmp_path / "typo.jpg")]) == 2
    assert f"{tmp_path / 'typo.jpg'} does not exist" in capsys.readouterr().err
    assert predict.main([str(tmp_path / "no_run"), str(photos)]) == 2
    assert f"{tmp_path / 'no_run'} does not exist" in capsys.readouterr().err


def test_bad_options_exit_2(run_folder, photos):
    folder, _ = run_folder
    assert predict.main([str(folder), str(photos), "--top-k", "0"]) == 2
    assert predict.main([str(folder), str(photos), "--which", "last"]) == 2


def test_an_unknown_format_is_refused(run_folder):
    folder, _ = run_folder
    card = folder / "model.json"
    card.write_text(json.dumps({**json.loads(card.read_text()), "format": "tlbench-model/9"}))
    with pytest.raises(ConfigError, match="has format 'tlbench-model/9'; this tlbench reads 'tlbench-model/1'"):
        export.load_model(folder)


def test_a_model_tlbench_cannot_rebuild_is_named(run_folder):
    folder, _ = run_folder
    card = folder / "model.json"
    meta = json.loads(card.read_text())
    card.write_text(json.dumps({**meta, "model": {**meta["model"], "name": "test_resnett"}}))
    with pytest.raises(ConfigError, match="cannot rebuild model 'test_resnett' \\(source timm\\).*closest timm names"):
        export.load_model(folder)


def test_weights_that_do_not_fit_name_the_first_keys(run_folder):
    folder, _ = run_folder
    card = folder / "model.json"
    card.write_text(json.dumps({**json.loads(card.read_text()), "classes": ["cat", "dog"]}))  # head saved for 3
    with pytest.raises(WeightsMismatchError, match=r"other shape \(2\): fc.weight \(3, \d+\) in the file"):
        export.load_model(folder)
    export.save_model(folder, "model", {"extra.weight": torch.zeros(1)}, META)
    with pytest.raises(WeightsMismatchError, match=r"missing \(\d+\): conv1.0.weight.*unexpected \(1\): extra.weight"):
        export.load_model(folder)


def test_missing_weights_file_is_named(run_folder):
    folder, _ = run_folder
    (folder / "model.safetensors").unlink()
    with pytest.raises(DataNotFoundError, match="model.safetensors does not exist"):
        export.load_model(folder)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_predictions_match_cpu(run_folder, photos, tmp_path):
    folder, _ = run_folder
    rows = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.csv"
        assert predict.main([str(folder), str(photos), "--device", device, "--csv", str(out)]) == 0
        with open(out, newline="") as handle:
            rows[device] = list(csv.DictReader(handle))
    for cpu, cuda in zip(rows["cpu"], rows["cuda"]):
        assert cpu["top1_class"] == cuda["top1_class"]
        assert float(cpu["top1_prob"]) == pytest.approx(float(cuda["top1_prob"]), abs=1e-3)
