"""What an export publishes: results merged over evaluations, no local paths, the licence asked for."""

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_mae_config, tiny_training_args, write_square_folders
from huggingface_hub import ModelCard

from ssl_hf import MAEForPreTraining, get_method
from ssl_hf.cards import update_card
from ssl_hf.cli import main
from ssl_hf.evaluation import evaluate_backbone
from ssl_hf.export import export_pretrained
from ssl_hf.hub import export_files
from ssl_hf.published import LOCAL_RECORD, RESULTS_FILE, license_id, merged_results
from ssl_hf.training import pretrain


def _row(protocol, top1, dataset="digits", backbone="pretrained", **fields) -> dict:
    return {"protocol": protocol, "backbone": backbone, "dataset": dataset, "split": "test", "top1": top1, **fields}


def _export(folder: Path, **kwargs) -> Path:
    torch.manual_seed(0)
    return export_pretrained(MAEForPreTraining(tiny_mae_config()).eval(), folder, **kwargs)


def _evaluation(export: Path) -> str:
    text = (export / "README.md").read_text()
    return text[text.index("## Evaluation") : text.index("## Intended uses")]


def _diagnostics(export: Path, name: str, dataset: str = "digits") -> dict:
    """A diagnostics row whose two plots were written into the export's plots/ folder (absolute paths, as evaluate)."""
    plots = {}
    for kind in ("spectrum", "pca"):
        path = export / "plots" / f"{name}_{kind}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"\x89PNG\r\n\x1a\n")
        plots[kind] = str(path)
    geometry = {"alignment": 0.1, "uniformity": -1.0, "effective_rank": 3.0, "token_cosine_similarity": 0.5}
    return {"protocol": "diagnostics", "backbone": "pretrained", "dataset": dataset, **geometry, "plots": plots}


# ------------------------------------------------------------------------------------------- merged results


def test_a_second_update_card_replaces_only_the_row_of_the_same_protocol_backbone_and_dataset(tmp_path):
    export = _export(tmp_path / "export")
    update_card(
        export, {"results": [_row("knn", 0.5), _row("linear", 0.6), _diagnostics(export, "pretrained_digits")]}
    )
    update_card(export, {"results": [_row("knn", 0.7), _row("knn", 0.3, dataset="ylecun/mnist")]})
    section = _evaluation(export)
    assert "| pretrained | knn | digits | 70.00 % |" in section  # replaced
    assert "50.00 %" not in section
    assert "| pretrained | linear | digits | 60.00 % |" in section  # kept
    assert "| pretrained | knn | ylecun/mnist | 30.00 % |" in section  # another dataset: added
    assert "![pretrained_digits_pca](plots/pretrained_digits_pca.png)" in section  # the plot links stay
    assert sorted(p.name for p in (export / "plots").iterdir()) == [
        "pretrained_digits_pca.png",
        "pretrained_digits_spectrum.png",
    ]
    rows = json.loads((export / RESULTS_FILE).read_text())["results"]
    assert [(r["protocol"], r["dataset"], r["top1"]) for r in rows if r["protocol"] != "diagnostics"] == [
        ("knn", "digits", 0.7),
        ("linear", "digits", 0.6),
        ("knn", "ylecun/mnist", 0.3),
    ]
    metrics = {
        (r.metric_name, r.dataset_type, r.metric_value) for r in ModelCard.load(export / "README.md").data.eval_results
    }
    assert metrics == {
        ("k-NN top-1", "digits", 70.0),
        ("linear probe top-1", "digits", 60.0),
        ("k-NN top-1", "ylecun/mnist", 30.0),
    }


def test_a_replaced_diagnostics_row_drops_the_plots_only_it_linked(tmp_path):
    export = _export(tmp_path / "export")
    update_card(export, {"results": [_diagnostics(export, "old")]})
    update_card(export, {"results": [_diagnostics(export, "new")]})
    section = _evaluation(export)
    assert "plots/new_pca.png" in section
    assert "old_pca" not in section
    assert sorted(p.name for p in (export / "plots").iterdir()) == ["new_pca.png", "new_spectrum.png"]


def test_few_shot_settings_are_rows_of_their_own():
    previous = [_row("fewshot", 0.1, shots=1), _row("fewshot", 0.2, shots=5)]
    merged = merged_results(
        previous, [_row("fewshot", 0.3, shots=5), _row("fewshot", 0.4, backbone="random_init", shots=5)]
    )
    assert [(r["shots"], r["backbone"], r["top1"]) for r in merged] == [
        (1, "pretrained", 0.1),
        (5, "pretrained", 0.3),
        (5, "random_init", 0.4),
    ]


def test_export_again_keeps_the_evaluation_and_removes_stale_plots(tmp_path):
    export = _export(tmp_path / "export")
    update_card(export, {"results": [_row("knn", 0.5), _diagnostics(export, "pretrained_digits")]})
    before = _evaluation(export)
    (export / "plots" / "stale_pca.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a plot no row links
    _export(export)
    assert _evaluation(export) == before
    assert sorted(p.name for p in (export / "plots").iterdir()) == [
        "pretrained_digits_pca.png",
        "pretrained_digits_spectrum.png",
    ]
    _export(export, results={"results": [_row("knn", 0.9), _row("linear", 0.6)]})  # --results merge too
    section = _evaluation(export)
    assert "| pretrained | knn | digits | 90.00 % |" in section
    assert "| pretrained | linear | digits | 60.00 % |" in section
    assert "plots/pretrained_digits_pca.png" in section


def test_diagnostics_plots_are_named_by_backbone_and_dataset(tmp_path):
    squares = write_square_folders(tmp_path / "my squares", {"black": 12, "white": 243}, 4, 12)
    export = _export(tmp_path / "export")
    (row,) = evaluate_backbone(
        str(export), str(squares), protocols=("diagnostics",), plots_dir=export / "plots", cache=False
    )
    assert sorted(Path(p).name for p in row["plots"].values()) == [
        "pretrained_my-squares_pca.png",
        "pretrained_my-squares_spectrum.png",
    ]


# ------------------------------------------------------------------------------------------- no local paths


@pytest.fixture(scope="module")
def run_on_a_local_folder(tmp_path_factory):
    """A 2-step MAE run on a local image folder, exported and evaluated on that folder with --update_card."""
    root = tmp_path_factory.mktemp("local")
    squares = write_square_folders(root / "data" / "squares", {"black": 12, "white": 243}, 8, 12)
    args = tiny_training_args(root / "runs" / "mae-squares", dataset=str(squares / "train"), max_steps=2, save_steps=2)
    final = pretrain(get_method("mae"), tiny_mae_config(), args)
    export = root / "exports" / "mae-squares"
    main(["export", str(final), "--output_dir", str(export)])
    main(["evaluate", str(export), "--dataset", str(squares), "--protocol", "knn,diagnostics", "--update_card"])
    main(["evaluate", str(export), "--dataset", str(squares), "--random_init", "--update_card"])
    return root, export


def test_published_files_hold_no_local_path(run_on_a_local_folder):
    root, export = run_on_a_local_folder
    published = export_files(export)
    assert export / LOCAL_RECORD not in published  # hidden: `ssl-hf push` leaves it on this machine
    for path in published:
        if path.suffix in (".json", ".md"):
            assert str(root) not in path.read_text(), path.name
    training = json.loads((export / "training_args.json").read_text())["training"]
    assert training["dataset"] == "train"  # the folder's name
    assert training["output_dir"] == "mae-squares"
    text = (export / "README.md").read_text()
    assert "| dataset | `train` (split train): local data |" in text
    assert "| pretrained | knn (k=20, T=0.07, mean features) | squares |" in text
    assert "| random_init (MAE init at step 0, seed 0" in text
    assert "![pretrained_squares_pca](plots/pretrained_squares_pca.png)" in text
    rows = json.loads((export / RESULTS_FILE).read_text())["results"]
    assert {r["backbone"] for r in rows} == {"pretrained", "random_init"}  # merged over the two evaluations


def test_the_local_record_keeps_the_paths_for_this_machine(run_on_a_local_folder):
    root, export = run_on_a_local_folder
    local = json.loads((export / LOCAL_RECORD).read_text())["training"]
    run = json.loads((root / "runs" / "mae-squares" / "args.json").read_text())["training"]
    assert local["dataset"] == run["dataset"] == str(root / "data" / "squares" / "train")  # resume compares it
    assert local["output_dir"] == run["output_dir"]


# ------------------------------------------------------------------------------------------- licence


def test_export_writes_the_licence_asked_for_and_update_card_keeps_it(tmp_path):
    assert ModelCard.load(_export(tmp_path / "default") / "README.md").data.license == "apache-2.0"
    export = tmp_path / "mit"
    torch.manual_seed(0)
    MAEForPreTraining(tiny_mae_config()).eval().save_pretrained(tmp_path / "final")
    main(["export", str(tmp_path / "final"), "--output_dir", str(export), "--license", "CC-BY-NC-4.0"])
    assert ModelCard.load(export / "README.md").data.license == "cc-by-nc-4.0"
    update_card(export, {"results": [_row("knn", 0.5)]})
    assert ModelCard.load(export / "README.md").data.license == "cc-by-nc-4.0"


@pytest.mark.parametrize("value", ["Apache License 2.0", "https://opensource.org/licenses/MIT", "", "-mit"])
def test_a_licence_that_is_not_an_id_is_refused(tmp_path, capsys, value):
    with pytest.raises(ValueError, match="not a licence id"):
        license_id(value)
    torch.manual_seed(0)
    MAEForPreTraining(tiny_mae_config()).eval().save_pretrained(tmp_path / "final")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "final"), "--output_dir", str(tmp_path / "out"), f"--license={value}"])
    assert exit_info.value.code == 2
    assert "huggingface.co/docs/hub/repositories-licenses" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything is written
