"""benchmarks/quality.py and report_quality.py: one tiny real run, reuse, TEC's base, verdicts, claims, the PNG."""

import json
import statistics

import pytest
from bench_scripts import load

import ssl_hf


quality = load("quality")
report_quality = load("report_quality")
DATASET = "digit-scenes"
D = "\N{EN DASH}"  # an empty cell


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """BYOL for 2 steps with its CPU preset, probed on 100 / 50 digits images (saved next to the runs)."""
    import datasets

    from ssl_hf.data.builtin import load_builtin

    root = tmp_path_factory.mktemp("quality")
    eval_dir = root / "work" / "eval"
    splits = {s: load_builtin("digits", s).select(range(n)) for s, n in (("train", 100), ("test", 50))}
    datasets.DatasetDict(splits).save_to_disk(str(eval_dir))
    extra = f"--eval_dataset {eval_dir} --eval_max_images 50 --mixed_precision no --batch_size 16"
    argv = ["--workdir", str(root / "work"), "--results", str(root / "results"), "--max_steps", "2"]
    argv += ["--eval_dataset", str(eval_dir), "--probe_epochs", "2", "--extra", extra]
    args = quality.parse_args(argv)
    return root, args, quality.run(args, DATASET, "byol", 0)


def test_a_run_writes_its_result_file(tiny):
    root, args, record = tiny
    path = args.results / DATASET / "byol_seed0.json"
    assert json.loads(path.read_text()) == record
    assert (record["method"], record["seed"], record["dataset"], record["preset"]) == ("byol", 0, DATASET, "byol-cpu")
    assert record["preset_fields"] == ssl_hf.get_method("byol").presets["byol-cpu"]
    assert record["max_steps_override"] == 2
    assert record["steps"] == 2
    assert record["images_seen"] == 32
    assert record["wall_seconds"] > 0
    assert record["images_per_sec"] > 0
    assert [step for step, _ in record["knn_curve"]] == [0, 2]
    assert record["knn_floor"] is not None
    # the method asks for `cls`; a ResNet's record names what was applied, as its rows do
    assert ssl_hf.get_method("byol").feature_pool == "cls"
    assert record["pool"] == "mean"
    rows = {(r["backbone"], r["protocol"]): r for r in record["evaluation"]}
    assert set(rows) == {(b, p) for b in ("pretrained", "random_init") for p in ("knn", "linear")}
    # a ResNet: its rows name the pooling applied (the average-pooled last stage), not the method's `cls`
    assert all(0 <= r["top1"] <= 100 and r["pool"] == "mean" and r["num_test"] == 50 for r in rows.values())
    assert rows["random_init", "knn"]["floor"].startswith("BYOL init at step 0, seed 0")
    assert "floor" not in rows["pretrained", "knn"]
    assert set(record["machine"]) == {"processor", "cpu", "cpu_count", "torch_threads"}
    assert set(record["versions"]) == {"python", "torch", "transformers", "ssl_hf"}
    assert record["command"].startswith("ssl-hf pretrain --method byol --preset byol-cpu --dataset digit-scenes")
    assert "--output_dir digit-scenes/byol/seed0-steps2" in record["command"]
    assert str(root) not in path.read_text()  # no local paths in a result file


def test_a_rerun_reuses_the_finished_run_and_result(tiny, monkeypatch):
    root, args, record = tiny

    def no_launch(*_):
        raise AssertionError("the finished run was trained again")

    monkeypatch.setattr(quality, "launch", no_launch)
    path = args.results / DATASET / "byol_seed0.json"
    path.unlink()
    again = quality.run(args, DATASET, "byol", 0)  # re-evaluated from the finished run
    assert again["wall_seconds"] == record["wall_seconds"]
    assert again["knn_curve"] == record["knn_curve"]
    monkeypatch.setattr(quality, "evaluate", no_launch)
    assert quality.run(args, DATASET, "byol", 0) == again  # same recipe: the result file is kept
    other = quality.parse_args([*_argv(args), "--extra", args.extra + " --learning_rate 0.1"])
    with pytest.raises(SystemExit, match="other flags"):
        quality.run(other, DATASET, "byol", 0)


def _argv(args) -> list[str]:
    return ["--workdir", str(args.workdir), "--results", str(args.results), "--max_steps", str(args.max_steps)]


def test_tec_trains_after_the_mae_run_of_its_seed_and_learns_from_its_export(tmp_path, monkeypatch):
    launched = []

    def fake_launch(flags, log):
        launched.append(flags)
        (tmp_path / flags[flags.index("--output_dir") + 1] / "final").mkdir(parents=True)

    monkeypatch.setattr(quality, "launch", fake_launch)
    monkeypatch.setattr(quality, "export", lambda run: run / "export")
    args = quality.parse_args(["--workdir", str(tmp_path), "--max_steps", "3"])
    run, info = quality.pretrain(args, DATASET, "tec", 1)
    mae = tmp_path / DATASET / "mae" / "seed1-steps3"
    assert [flags[flags.index("--method") + 1] for flags in launched] == ["mae", "tec"]
    assert launched[0][launched[0].index("--output_dir") + 1] == str(mae)
    assert launched[1][launched[1].index("--base_model") + 1] == str(mae / "export")
    assert run == tmp_path / DATASET / "tec" / "seed1-steps3"
    assert info["wall_seconds"] >= 0
    quality.pretrain(args, DATASET, "tec", 1)
    assert len(launched) == 2  # both runs reused


def test_raw_pixels_are_computed_once(tiny, monkeypatch):
    root, args, _ = tiny
    first = quality.raw_pixels(args)
    assert first["eval_dataset"] == "eval"
    assert 0 <= first["knn"] <= 100
    assert 0 <= first["linear"] <= 100
    assert first["num_train"] == 100
    monkeypatch.setattr(quality, "split_pixels", None)  # a second computation would fail
    assert quality.raw_pixels(args) == first


def _record(method: str, seed: int, knn: float, linear: float, floors: tuple[float, float] = (20.0, 30.0)) -> dict:
    rows = [
        {"protocol": p, "backbone": b, "top1": v, "pool": "cls"}
        for b, values in (("pretrained", (knn, linear)), ("random_init", floors))
        for p, v in zip(("knn", "linear"), values)
    ]
    return {
        "method": method,
        "seed": seed,
        "dataset": DATASET,
        "eval_dataset": "digits",
        "probe_epochs": 100,
        "pool": "cls",
        "steps": 100,
        "max_steps_override": None,
        "extra": "",
        "wall_seconds": 600.0,
        "images_per_sec": 100.0,
        "knn_floor": floors[0],
        "knn_curve": [[0, floors[0]], [50, (floors[0] + knn) / 2], [100 + seed, knn]],
        "machine": {"cpu": "test CPU", "torch_threads": 2},
        "evaluation": rows,
    }


@pytest.fixture
def synthetic(tmp_path):
    """k-NN over floor 20: byol 12 ± 1 (learns), dino 12 ± 7 (too noisy), msbreg 8 ± 0.5 (too small); linear over
    floor 30: mae 10 ± 1, asl 20 ± 1 (ASL > MAE), tec 30 (1 seed); raw pixels k-NN 30."""
    results = {
        "byol": [(31, 40), (32, 40), (33, 40)],
        "dino": [(25, 40), (32, 40), (39, 40)],
        "msbreg": [(27.5, 40), (28, 40), (28.5, 40)],
        "mae": [(15, 39), (15, 40), (15, 41)],
        "asl": [(15, 49), (15, 50), (15, 51)],
        "tec": [(15, 60)],
    }
    for method, values in results.items():
        for seed, (knn, linear) in enumerate(values):
            path = tmp_path / DATASET / f"{method}_seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(_record(method, seed, knn, linear)))
    (tmp_path / "raw_pixels.json").write_text(json.dumps({"knn": 30.0, "linear": 25.0}))
    return tmp_path


def test_verdict_needs_ten_points_and_twice_the_seed_std(synthetic):
    runs = report_quality.load_results(synthetic)[DATASET]
    assert list(runs) == ["mae", "asl", "tec", "byol", "msbreg", "dino"]  # report order
    byol = report_quality.acceptance(runs["byol"], "knn")
    assert byol["delta"] == pytest.approx(12)
    assert byol["seed_std"] == pytest.approx(1)
    assert byol["learns"]
    assert not report_quality.acceptance(runs["dino"], "knn")["learns"]  # 12 < 2 x 7
    assert not report_quality.acceptance(runs["msbreg"], "knn")["learns"]  # 8 < 10
    assert report_quality.acceptance(runs["asl"], "linear")["learns"]  # 20 ± 1
    assert report_quality.acceptance(runs["mae"], "linear")["learns"]  # exactly 10 points ± 1 counts
    assert not report_quality.acceptance(runs["tec"], "linear")["learns"]  # one seed: no spread measured


def test_report_renders_acceptance_raw_pixels_and_claims(synthetic):
    text = report_quality.quality_section(synthetic, "results/quality")
    assert "| byol | k-NN (cls) | 20.00 | 32.00 ± 1.00 | +12.00 | yes | yes | 100 | 3 | 10.0 |" in text
    assert "| dino | k-NN (cls) | 20.00 | 32.00 ± 7.00 | +12.00 | **no** | yes |" in text
    assert "| msbreg | k-NN (cls) | 20.00 | 28.00 ± 0.50 | +8.00 | **no** | **no** |" in text
    assert f"| asl | linear probe (cls) | 30.00 | 50.00 ± 1.00 | +20.00 | yes | {D} |" in text
    assert f"| tec | linear probe (cls) | 30.00 | 60.00 | +30.00 | **no** (1 seed) | {D} |" in text
    assert "| ASL > MAE (Tab. 1, 7) | linear probe | +10.00 | 1.00 | reproduced |" in text
    assert "| ASL > MAE (Tab. 1, 7) | k-NN | +0.00 | 0.00 | not reproduced |" in text
    assert "| MSBReg > BYOL (Supp. Tab. 5) | k-NN | -4.00 | 1.00 | not reproduced |" in text
    assert f"| TEC > its MAE base (Tab. 2, 4) | linear probe | +20.00 | {D} | not measured (1 seed" in text
    assert f"| SelfPatch > DINO (Tab. 1, 3) | k-NN | {D} | {D} | not measured |" in text
    assert f"| raw pixels | 30.00 | {D} | 25.00 |" in text
    assert "![online k-NN of every method during pre-training](results/quality/knn_curves_digit-scenes.png)" in text


def test_report_without_results_says_so(tmp_path):
    assert report_quality.quality_section(tmp_path, "results/quality").count("\n") == 0
    assert "no results yet" in report_quality.quality_section(tmp_path, "results/quality")


def test_knn_curves_png_is_written(synthetic):
    (path,) = report_quality.write_curves(synthetic)
    assert path == synthetic / "knn_curves_digit-scenes.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mean_std_is_the_sample_std():
    assert report_quality.mean_std([1.0, 3.0]) == (2.0, pytest.approx(statistics.stdev([1.0, 3.0])))
    assert report_quality.mean_std([5.0]) == (5.0, None)


def test_committed_readmes_match_the_results():
    """The acceptance of the benchmarks: README numbers are the JSON files' numbers, rendered by report.py."""
    report = load("report")
    for path, text in report.rendered().items():
        assert path.read_text() == text, f"{path} is stale: run python benchmarks/report.py"


def test_compact_table_has_every_method_and_its_verdict(synthetic):
    runs = report_quality.load_results(synthetic)[DATASET]
    lines = report_quality.compact_table(runs)
    assert [line.split(" | ")[0].lstrip("| ") for line in lines[2:]] == list(report_quality.METHODS)
    assert "| byol | `byol-cpu` | 100 | k-NN (cls) | 20.00 | 32.00 ± 1.00 | +12.00 | yes | 3 | 10.0 |" in lines
    assert (
        "| msbreg | `msbreg-cpu` | 100 | k-NN (cls) | 20.00 | 28.00 ± 0.50 | +8.00 | **no** (Δ < 10) | 3 |" in lines[6]
    )
    assert (
        "| dino | `dino-cpu` | 100 | k-NN (cls) | 20.00 | 32.00 ± 7.00 | +12.00 | **no** (Δ ≤ 2 \N{MULTIPLICATION SIGN} seed std) |"
        in lines[7]
    )
    assert "| tec | `tec-cpu` | 100 | linear probe (cls) | 30.00 | 60.00 | +30.00 | **no** (1 seed) | 1 |" in lines[4]
    assert lines[-1] == f"| selfpatch | `selfpatch-cpu` | {D} | k-NN | {D} | {D} | {D} | no results yet | 0 | {D} |"


def test_compact_section_names_the_shortfalls_in_words(synthetic):
    text = report_quality.compact_section(synthetic, "benchmarks/results/quality", "docs/benchmarks.md")
    assert "Less than 10 points above the floor: msbreg (+8.00)." in text
    assert "Not more than twice the seed std above the floor: dino (+12.00, seed std 7.00)." in text
    assert "One seed only, so no verdict: tec." in text
    assert "No results yet: selfpatch." in text
    assert "Raw pixels of the evaluation view reach k-NN 30.00 %, above msbreg:" in text
    assert text.count("![") == 1  # one plot
    assert text.endswith("(benchmarks/results/quality/knn_curves_digit-scenes.png)")
    assert "[docs/benchmarks.md](docs/benchmarks.md)" in text


def test_compact_section_without_results_says_so(tmp_path):
    assert "No quality results yet" in report_quality.compact_section(tmp_path, "x", "docs/benchmarks.md")


def test_primary_dataset_is_digit_scenes_else_the_one_with_most_runs():
    assert report_quality.primary_dataset({"digits": {"a": [1, 2]}, "digit-scenes": {"b": [1]}}) == "digit-scenes"
    assert report_quality.primary_dataset({"digits": {"a": [1]}, "cifar": {"a": [1], "b": [2]}}) == "cifar"
    assert report_quality.primary_dataset({}) is None


def test_minutes_name_the_seeds_run_with_another_thread_count(synthetic):
    runs = report_quality.load_results(synthetic)[DATASET]
    runs["byol"][1]["machine"] = {"cpu": "test CPU", "torch_threads": 1}
    runs["byol"][1]["wall_seconds"] = 1200.0
    lines = report_quality.compact_table(runs)
    assert "| yes | 3 | 10.0 / 20.0 (1 thread) / 10.0 |" in next(line for line in lines if line.startswith("| byol"))
    assert next(line for line in lines if line.startswith("| asl")).endswith("| 10.0 |")  # all at the usual 2


def test_compact_section_names_the_methods_above_raw_pixels_on_other_datasets(synthetic):
    for seed, knn in enumerate((34.0, 36.0)):  # mean 35 ± 1.41 above raw pixels' 30; dino's 29 below
        for method, value in (("msbreg", knn), ("dino", 29.0)):
            path = synthetic / "digits" / f"{method}_seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({**_record(method, seed, value, 50.0), "dataset": "digits"}))
    text = report_quality.compact_section(synthetic, "benchmarks/results/quality", "docs/benchmarks.md")
    assert "Also pre-trained on `digits` (msbreg, dino)" in text
    assert "Above raw pixels' k-NN (30.00 %) when pre-trained on `digits`: msbreg (35.00 ± 1.41 %, 2 seeds)." in text
    assert report_quality.above_raw_pixels(report_quality.load_results(synthetic)["digits"], None) == []
