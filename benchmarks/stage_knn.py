"""Where in a ResNet export does the k-NN accuracy live? k-NN of every stage's feature map, average- and max-pooled.

The export's own feature (`pooler_output`) is the average-pooled last stage. This diagnostic evaluates, for each
stage's output (`hidden_states`: the stem, then each stage), the weighted k-NN (k = 20, T = 0.07, as the quality
benchmark) of its global average and of its global max over positions, on the full train / test splits of the
evaluation dataset, next to raw pixels and, with `--floor`, next to the same per-stage scores of the export's
calibrated floor (the network at step 0, BatchNorm statistics from 2,048 training images, as the quality benchmark's
floor). It answers whether what a k-NN needs is in the network but lost by its last stage or by its pooling, and
whether pre-training put it there.

    python benchmarks/stage_knn.py RUN/export [RUN2/export ...] --name msbreg_seed0 [--name ...] [--floor]
Writes benchmarks/results/diagnostics/stage_knn_<name>.json (or under --results) per export and prints a table.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModel

import ssl_hf  # noqa: F401  (registers the small-stem ResNet with the Auto classes)
from ssl_hf.evaluation.features import load_random_init
from ssl_hf.evaluation.floor import calibrate_twin
from ssl_hf.evaluation.knn import knn_accuracy


sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import split_pixels  # the quality benchmark's evaluation view (32 px), as its raw-pixel floor


RESULTS = Path(__file__).resolve().parent / "results" / "diagnostics"


@torch.no_grad()
def stage_features(model, pixels: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """`{"stage<i>_avg" | "stage<i>_max": (N, C_i)}` for each of the model's hidden states (stem = stage 0)."""
    out: dict[str, list[torch.Tensor]] = {}
    for batch in pixels.split(batch_size):
        for i, h in enumerate(model(batch, output_hidden_states=True).hidden_states):
            out.setdefault(f"stage{i}_avg", []).append(h.mean((2, 3)))
            out.setdefault(f"stage{i}_max", []).append(h.amax((2, 3)))
    return {k: torch.cat(v) for k, v in out.items()}


def scores(model, train_x, train_y, test_x, test_y) -> dict[str, dict]:
    """`{"stage<i>_avg" | "stage<i>_max": {"dim", "knn"}}`, k-NN top-1 in percent."""
    train, test = stage_features(model, train_x), stage_features(model, test_x)
    return {
        key: {
            "dim": train[key].shape[1],
            "knn": round(100 * knn_accuracy(train[key], train_y, test[key], test_y)["top1"], 2),
        }
        for key in train
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exports", nargs="+", help="Exported ResNet folders (ssl-hf export output)")
    parser.add_argument("--name", action="append", required=True, help="Result name per export, in order")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Folder of the result files")
    parser.add_argument("--floor", action="store_true", help="Also score the export's calibrated floor per stage")
    args = parser.parse_args(argv)
    if len(args.name) != len(args.exports):
        parser.error(f"give one --name per export ({len(args.exports)} exports, {len(args.name)} names)")
    (train_x, train_y), (test_x, test_y) = (split_pixels(args.dataset, s) for s in ("train", "test"))
    raw = 100 * knn_accuracy(train_x.flatten(1), train_y, test_x.flatten(1), test_y)["top1"]
    args.results.mkdir(parents=True, exist_ok=True)
    for path, name in zip(args.exports, args.name):
        model = AutoModel.from_pretrained(path).eval()
        rows = scores(model, train_x, train_y, test_x, test_y)
        pooler = rows[f"stage{len(rows) // 2 - 1}_avg"]["knn"]  # the export's own feature: the last stage, averaged
        record = {
            "export": str(path),
            "dataset": args.dataset,
            "num_train": len(train_y),
            "num_test": len(test_y),
            "raw_pixels_knn": round(raw, 2),
            "export_feature_knn": pooler,
            "stages": rows,
        }
        if args.floor:
            twin, view, built = load_random_init(path)
            record["floor"] = calibrate_twin(twin, view, built, args.dataset, "train", None, 2048, 256, 0)["floor"]
            record["floor_stages"] = scores(twin, train_x, train_y, test_x, test_y)
        (args.results / f"stage_knn_{name}.json").write_text(json.dumps(record, indent=1) + "\n")
        print(f"{name}: raw pixels {raw:.2f} %, export feature {pooler:.2f} %")
        for key, row in rows.items():
            floor = f"  (floor {record['floor_stages'][key]['knn']:.2f} %)" if args.floor else ""
            print(f"  {key:12s} dim {row['dim']:4d}  k-NN {row['knn']:.2f} %{floor}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
