"""The FuxiCTR side of the performance benchmark. Runs in FuxiCTR's own virtual environment.

    FXVENV/bin/python benchmarks/fuxictr_side.py JOB.json

JOB.json says what to run (built by the parts in `benchmarks/parts/` with `benchmarks/fuxictr_bridge.py`,
which puts our data and configs in FuxiCTR's formats; `benchmarks.measure.run_worker` reads the last
stdout line back as JSON). This file imports only the standard library, numpy, torch and fuxictr 2.3.10, because
FuxiCTR cannot share an environment with ctrbench (it needs polars < 2 and installs a top-level
`model_zoo` package). FuxiCTR's wheel has no models: `model_zoo_dir` names a folder holding
AFN.py, AutoInt.py, DCNv2.py, DLRM.py, FinalMLP.py, MaskNet.py, WuKong.py and xDeepFM.py fetched from
github.com/reczoo/FuxiCTR (model_zoo/<Model>/src/<Model>.py, e.g. at 5c42ceb, the commit that made it
2.3.10); that code is never part of ctrbench.

Jobs:
* train: build the model with FuxiCTR's own classes, iterate FuxiCTR's NpzDataLoader and call the
  model's own `train_step`; time `steps` steps after `warmup_steps`, then time `model.predict` over
  the validation split. Also returns the model's parameter count (embedding tables included).
* converge: FuxiCTR's full `fit` (early stopping on validation AUC, best weights restored), then
  `evaluate` on the test split.
* preprocess: FuxiCTR's `FeatureProcessor` + `build_dataset` on CSV files (its own pipeline: polars
  statistics, vocabularies, Ray transform, parquet output).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time


def _load_model_class(model_zoo_dir: str, class_name: str):
    sys.path.insert(0, model_zoo_dir)
    module = __import__(class_name)
    return getattr(module, class_name)


def _feature_map(job: dict):
    from fuxictr.features import FeatureMap

    path = os.path.join(job["data"], "feature_map.json")
    with open(path) as f:
        dataset_id = json.load(f)["dataset_id"]
    fmap = FeatureMap(dataset_id, job["data"])
    fmap.load(path, {"embedding_dim": job["model_params"]["embedding_dim"]})  # as FuxiCTR's run_expid does
    return fmap


def _model(job: dict, fmap, model_root: str):
    cls = _load_model_class(job["model_zoo_dir"], job["fuxictr_class"])
    train = job["train"]
    return cls(fmap, gpu=-1, optimizer="adam", loss="binary_crossentropy", learning_rate=train["learning_rate"],
               embedding_regularizer=train["embedding_regularizer"], net_regularizer=train["net_regularizer"],
               metrics=["logloss", "AUC"], monitor="AUC", monitor_mode="max", verbose=0, model_root=model_root,
               early_stop_patience=2, **job["model_params"])


def _loader(fmap, job: dict, split: str, batch_size: int, shuffle: bool):
    """FuxiCTR's in-memory npz loader (a torch DataLoader over rows; `num_workers` 1 is its default)."""
    from fuxictr.pytorch.dataloaders.npz_dataloader import NpzDataLoader

    return NpzDataLoader(fmap, os.path.join(job["data"], f"{split}.npz"), batch_size=batch_size, shuffle=shuffle,
                         num_workers=job["num_workers"])


def train_job(job: dict) -> dict:
    import torch

    fmap = _feature_map(job)
    with tempfile.TemporaryDirectory() as model_root:
        torch.manual_seed(job["seed"])
        model = _model(job, fmap, model_root)
        model.train()
        started = time.perf_counter()
        train_gen = _loader(fmap, job, "train", job["train"]["batch_size"], shuffle=True)
        load_seconds = time.perf_counter() - started
        model._max_gradient_norm = job["train"]["max_grad_norm"]
        warmup, steps = job["warmup_steps"], job["steps"]
        samples, done = 0, 0
        while done < warmup + steps:
            for batch in train_gen:
                if done == warmup:
                    started, samples = time.perf_counter(), 0
                model.train_step(batch)
                samples += len(batch[fmap.labels[0]])
                done += 1
                if done == warmup + steps:
                    break
        train_seconds = time.perf_counter() - started
        valid_gen = _loader(fmap, job, "valid", job["eval_batch_size"], shuffle=False)
        started = time.perf_counter()
        predictions = model.predict(valid_gen)
        predict_seconds = time.perf_counter() - started
    return {"samples_per_second": samples / train_seconds, "train_seconds": train_seconds, "steps": steps,
            "inference_samples_per_second": len(predictions) / predict_seconds, "load_seconds": load_seconds,
            "parameters": sum(p.numel() for p in model.parameters())}


def converge_job(job: dict) -> dict:
    from fuxictr.pytorch.torch_utils import seed_everything

    fmap = _feature_map(job)
    with tempfile.TemporaryDirectory() as model_root:
        os.makedirs(os.path.join(model_root, fmap.dataset_id))  # FuxiCTR's fit saves its checkpoint there
        seed_everything(job["seed"])  # as FuxiCTR's run_expid does: python, numpy and torch
        model = _model(job, fmap, model_root)
        batch_size = job["train"]["batch_size"]
        train_gen = _loader(fmap, job, "train", batch_size, shuffle=True)
        valid_gen = _loader(fmap, job, "valid", batch_size, shuffle=False)
        started = time.perf_counter()
        model.fit(train_gen, epochs=job["epochs"], validation_data=valid_gen,
                  max_gradient_norm=job["train"]["max_grad_norm"])
        seconds = time.perf_counter() - started
        valid = model.evaluate(valid_gen)
        test = model.evaluate(_loader(fmap, job, "test", batch_size, shuffle=False))
    return {"valid_auc": valid["AUC"], "valid_logloss": valid["logloss"], "test_auc": test["AUC"],
            "test_logloss": test["logloss"], "epochs": model._epoch_index + 1, "seconds": seconds}


def preprocess_job(job: dict) -> dict:
    from fuxictr.preprocess import FeatureProcessor, build_dataset

    started = time.perf_counter()
    processor = FeatureProcessor(feature_cols=job["feature_cols"], label_col=job["label_col"],
                                 dataset_id=job["dataset_id"], data_root=job["out"])
    build_dataset(processor, train_data=job["train_csv"], valid_data=job["valid_csv"], test_data=job["test_csv"],
                  data_format="csv")
    return {"seconds": time.perf_counter() - started}


JOBS = {"train": train_job, "converge": converge_job, "preprocess": preprocess_job}


def main() -> None:
    with open(sys.argv[1]) as f:
        job = json.load(f)
    if job.get("log_file"):  # FuxiCTR's own per-epoch log, readable while a long job runs
        logging.basicConfig(level=logging.INFO, filename=job["log_file"])
    import torch

    torch.set_num_threads(job["threads"])
    result = JOBS[job["kind"]](job)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
