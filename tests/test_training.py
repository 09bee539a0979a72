"""The training engine: exact resume after SIGKILL, DDP under torchrun, init_from, freezing, guards."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from config import load_config
from tests.conftest import PROJECT_ROOT
from training import Trainer, TrainingError, fit, weights_checksum

QUICKSTART = PROJECT_ROOT / "configs" / "quickstart.yaml"


def tiny(tmp_path: Path, *extra: str) -> list[str]:
    """Overrides for a seconds-long run on 64 px synthetic faces (shared data cache per test folder)."""
    return [
        "experiment.name=t",
        f"experiment.output_dir={tmp_path / 'runs'}",
        "experiment.deterministic=true",
        f"data.sources.0.root={tmp_path / 'synthetic'}",
        "data.sources.0.n_images=16",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.image_size=64",
        "data.num_workers=0",
        "data.split.val_fraction=0.25",
        "data.split.test_fraction=0.1",
        "model.encoder=resnet18",
        "model.decoder_channels=[16, 16, 8, 8, 8]",
        "train.batch_size=4",
        "eval.batch_size=4",
        "train.epochs=3",
        "logging.wandb=disabled",
        *extra,
    ]


def metrics_rows(run_dir: Path) -> list[dict]:
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    for row in rows:
        row.pop("epoch_seconds")  # wall time is the one column that may differ
    return rows


def cli_env(**extra: str) -> dict[str, str]:
    """The test process's environment (same thread count: float reductions then match bit for bit)."""
    return dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), **extra)


def test_same_seed_same_metrics_csv(tmp_path):
    first = fit(load_config(QUICKSTART, tiny(tmp_path, "experiment.name=a")))
    second = fit(load_config(QUICKSTART, tiny(tmp_path, "experiment.name=b")))
    assert metrics_rows(first) == metrics_rows(second)
    other = fit(load_config(QUICKSTART, tiny(tmp_path, "experiment.name=c", "experiment.seed=7")))
    assert metrics_rows(other) != metrics_rows(first)


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    overrides = tiny(tmp_path, "train.epochs=5", "data.sources.0.n_images=24")
    reference = fit(load_config(QUICKSTART, overrides + ["experiment.name=reference"]))

    command = [sys.executable, str(PROJECT_ROOT / "train.py"), "--config", str(QUICKSTART), *overrides, "experiment.name=killed"]
    process = subprocess.Popen(command, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    last = None
    while time.time() < deadline and process.poll() is None:
        found = list((tmp_path / "runs").glob("killed-*/checkpoints/last.pt"))
        if found:
            try:
                if torch.load(found[0], weights_only=True)["epoch"] >= 2:
                    last = found[0]
                    break
            except Exception:  # noqa: BLE001 - a checkpoint is never half-written, but be patient anyway
                pass
        time.sleep(0.05)
    assert last is not None and process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = torch.load(last, weights_only=True)["epoch"]
    assert killed_at < 5

    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "train.py"), "--resume", str(last)], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = last.parent.parent
    assert Path(result.stdout.strip().splitlines()[-1]).resolve() == resumed.resolve()
    assert metrics_rows(resumed) == metrics_rows(reference)
    final, expected = torch.load(last, weights_only=True), torch.load(reference / "checkpoints" / "last.pt", weights_only=True)
    assert final["epoch"] == 5
    for key, value in expected["model"].items():
        assert torch.equal(final["model"][key], value), key


def test_torchrun_two_ranks_on_cpu(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",  # = torchrun
               str(PROJECT_ROOT / "train.py"), "--config", str(QUICKSTART), *tiny(tmp_path, "train.epochs=2", "data.sources.0.n_images=20")]
    result = subprocess.run(command, cwd=tmp_path, env=cli_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1  # one run folder, written by rank 0 only
    assert sorted(p.name for p in (runs[0] / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert len(list(csv.DictReader(open(runs[0] / "metrics.csv")))) == 2
    last = torch.load(runs[0] / "checkpoints" / "last.pt", weights_only=True)
    checksums = last["rank_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    from unet import build_model

    model = build_model(load_config(None, [f"{k}={v}" for k, v in (("model.encoder", "resnet18"), ("model.decoder_channels", "[16, 16, 8, 8, 8]"))]).model, encoder_weights=False)
    model.load_state_dict(last["model"])
    assert weights_checksum(model) == checksums[0]


def test_init_from_loads_weights_and_reports_mismatches(tmp_path, caplog):
    source = fit(load_config(QUICKSTART, tiny(tmp_path, "train.epochs=1", "experiment.name=source")))
    weights = torch.load(source / "checkpoints" / "last.pt", weights_only=True)["model"]
    trainer = Trainer(load_config(QUICKSTART, tiny(tmp_path, f"model.init_from={source / 'checkpoints' / 'last.pt'}", "experiment.name=child")))
    for key, value in weights.items():
        assert torch.equal(trainer.model.state_dict()[key], value)
    assert trainer.epoch == 0 and trainer.init_report == {"missing": [], "unexpected": [], "shape_mismatch": []}
    wider = Trainer(load_config(QUICKSTART, tiny(tmp_path, f"model.init_from={source / 'checkpoints' / 'last.pt'}", "model.decoder_channels=[32, 16, 8, 8, 8]", "experiment.name=wider")))
    assert wider.init_report["shape_mismatch"] and not wider.init_report["unexpected"]
    assert torch.equal(wider.model.state_dict()["encoder.conv1.weight"], weights["encoder.conv1.weight"])


def test_frozen_parameters_get_no_gradient_and_do_not_move(tmp_path):
    trainer = Trainer(load_config(QUICKSTART, tiny(tmp_path, "model.freeze_encoder=partial", "model.unfrozen_stages=1", "train.epochs=1")))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_one_epoch()
    named = dict(trainer.model.named_parameters())
    assert all(named[n].grad is None for n in named if n.startswith("encoder.") and not n.startswith("encoder.layer4."))
    assert not torch.equal(named["encoder.layer4.0.conv1.weight"], before["encoder.layer4.0.conv1.weight"])
    assert torch.equal(named["encoder.layer1.0.conv1.weight"], before["encoder.layer1.0.conv1.weight"])
    assert torch.equal(trainer.model.state_dict()["encoder.bn1.running_mean"], before["encoder.bn1.running_mean"])
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert id(named["encoder.conv1.weight"]) not in optimized


def test_non_finite_losses_are_skipped_then_abort(tmp_path, caplog):
    trainer = Trainer(load_config(QUICKSTART, tiny(tmp_path, "train.max_bad_steps=2")))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    real_loss = trainer.loss_fn
    calls = {"n": 0}

    def flaky(logits, target, region=None):
        calls["n"] += 1
        loss = real_loss(logits, target, region)
        return loss * float("nan") if calls["n"] == 1 else loss

    trainer.loss_fn = flaky  # one bad step: skipped with a warning, training goes on
    trainer.train_one_epoch()
    assert "non-finite loss or gradient" in caplog.text and trainer.step == len(trainer.train_loader) - 1
    trainer.loss_fn = lambda logits, target, region=None: real_loss(logits, target, region) * float("inf")
    with pytest.raises(TrainingError, match="non-finite 2 steps in a row"):
        trainer.train_one_epoch()
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())


def test_best_is_a_copy_not_the_final_weights(tmp_path, monkeypatch):
    trainer = Trainer(load_config(QUICKSTART, tiny(tmp_path, "train.epochs=3")))
    scores = iter([0.5, 0.3, 0.2])  # the first epoch is the best
    real_validate = trainer.validate
    monkeypatch.setattr(trainer, "validate", lambda: {**real_validate(), "iou": next(scores)})
    run_dir = trainer.fit()
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert best["epoch"] == 1 and last["epoch"] == 3 and best["best_metric"] == 0.5
    assert any(not torch.equal(best["model"][k], last["model"][k]) for k in best["model"])


def test_ctrl_c_saves_last_and_oom_gives_a_hint(tmp_path, monkeypatch):
    trainer = Trainer(load_config(QUICKSTART, tiny(tmp_path)))

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert torch.load(trainer.run_dir / "checkpoints" / "last.pt", weights_only=True)["interrupted"] is True

    def out_of_memory():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    other = Trainer(load_config(QUICKSTART, tiny(tmp_path, "experiment.name=oom")))
    monkeypatch.setattr(other, "train_one_epoch", out_of_memory)
    with pytest.raises(TrainingError, match="out of memory at train.batch_size=4.*data.patch_size"):
        other.fit()


def test_resume_refuses_overrides_that_change_the_run(tmp_path):
    from config import ConfigError
    from training import resume_config

    run_dir = fit(load_config(QUICKSTART, tiny(tmp_path, "train.epochs=1")))
    with pytest.raises(ConfigError, match="optim.lr: cannot be changed when resuming"):
        resume_config(run_dir / "checkpoints" / "last.pt", ["optim.lr=0.1"])
    assert resume_config(run_dir / "checkpoints" / "last.pt", ["train.epochs=4"]).train.epochs == 4


def test_bf16_autocast_trains_on_the_cpu_with_float32_losses(tmp_path):
    trainer = Trainer(load_config(QUICKSTART, tiny(tmp_path, "train.amp=bf16", "train.epochs=1")))
    seen = []
    real_loss = trainer.loss_fn

    def spy(logits, target, region=None):
        loss = real_loss(logits, target, region)
        seen.append(loss.dtype)
        return loss

    trainer.loss_fn = spy
    assert torch.isfinite(torch.tensor(trainer.train_one_epoch()))
    assert seen and all(dtype == torch.float32 for dtype in seen)
    from config import ConfigError

    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        Trainer(load_config(QUICKSTART, tiny(tmp_path, "train.amp=fp16", "experiment.device=cpu")))
