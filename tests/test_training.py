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
from torch import nn

from config import load_config
from data.dataset import make_loader
from engine.checkpoint import CheckpointError, model_state
from engine.inference import model_predictor, score_loader
from engine.trainer import Trainer, TrainingError, fit, resume_config
from tests.conftest import PROJECT_ROOT
from unet import build_model

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

    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "train.py"), "--resume", str(last)],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = last.parent.parent
    assert Path(result.stdout.strip().splitlines()[-1]).resolve() == resumed.resolve()
    assert metrics_rows(resumed) == metrics_rows(reference)
    final, expected = torch.load(last, weights_only=True), torch.load(reference / "checkpoints" / "last.pt", weights_only=True)
    assert final["epoch"] == 5
    for key, value in expected["model"].items():
        assert torch.equal(final["model"][key], value), key


def test_torchrun_two_ranks_on_cpu(tmp_path):
    overrides = tiny(tmp_path, "train.epochs=2", "data.sources.0.n_images=20")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",  # = torchrun
        str(PROJECT_ROOT / "train.py"),
        "--config",
        str(QUICKSTART),
        *overrides,
    ]
    result = subprocess.run(command, cwd=tmp_path, env=cli_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1  # one run folder, written by rank 0 only
    assert sorted(p.name for p in (runs[0] / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    rows = list(csv.DictReader(open(runs[0] / "metrics.csv")))
    assert len(rows) == 2
    # The validation figures merged over the two ranks' shards are those of one process scoring the
    # whole validation set with the same weights (the loss too: it comes from summed sums).
    last = torch.load(runs[0] / "checkpoints" / "last.pt", weights_only=True)
    single = Trainer(load_config(QUICKSTART, overrides + ["experiment.name=single"]))
    single.model.load_state_dict(last["model"])
    val = single.validate()
    for key in ("loss", "iou", "dice", "auc", "average_precision", "best_threshold"):
        assert float(rows[-1][f"val_{key}"]) == pytest.approx(val[key], rel=1e-5, abs=1e-9), key


def _ddp_worker(rank: int, world: int, port: int, overrides: list[str], nan_rank: int, out_dir: str) -> None:
    """One rank of a Gloo job (spawned by torch.multiprocessing): an epoch of training, then its own weights to a file."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    trainer = Trainer(load_config(QUICKSTART, overrides))
    try:
        real_loss, calls = trainer.loss_fn.forward, {"n": 0}

        def loss_fn(logits, target, region=None):
            calls["n"] += 1
            loss = real_loss(logits, target, region)
            return loss * float("nan") if rank == nan_rank and calls["n"] == 2 else loss

        trainer.loss_fn.forward = loss_fn  # training steps only: validation uses the loss's sums
        trainer.train_one_epoch()
        torch.save(
            {"step": trainer.step, "steps_per_epoch": len(trainer.train_loader), "model": model_state(trainer.model)},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        trainer.dist.close()


@pytest.mark.parametrize("nan_rank", [-1, 1], ids=["clean", "nan-on-rank-1"])
def test_ddp_ranks_end_with_identical_weights_even_when_one_rank_sees_a_non_finite_loss(tmp_path, nan_rank):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    overrides = tiny(tmp_path, "data.sources.0.n_images=24", "train.batch_size=2")
    context = mp.start_processes(
        _ddp_worker, args=(2, port, overrides, nan_rank, str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.time() + 150
    while not context.join(timeout=5):
        if time.time() > deadline:  # a rank waiting for a collective the other never enters
            for process in context.processes:
                process.kill()
            pytest.fail("a rank hung: the ranks did not agree on skipping the step")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    skipped = 1 if nan_rank >= 0 else 0
    assert [r["step"] for r in ranks] == [ranks[0]["steps_per_epoch"] - skipped] * 2  # both ranks skipped the same step
    for key, value in ranks[0]["model"].items():
        assert torch.equal(ranks[1]["model"][key], value), key  # each rank's own weights, compared here
        assert not value.is_floating_point() or torch.isfinite(value).all(), key


def test_init_from_loads_weights_and_reports_mismatches(tmp_path, caplog):
    source = fit(load_config(QUICKSTART, tiny(tmp_path, "train.epochs=1", "experiment.name=source")))
    weights = torch.load(source / "checkpoints" / "last.pt", weights_only=True)["model"]
    trainer = Trainer(
        load_config(QUICKSTART, tiny(tmp_path, f"model.init_from={source / 'checkpoints' / 'last.pt'}", "experiment.name=child"))
    )
    for key, value in weights.items():
        assert torch.equal(trainer.model.state_dict()[key], value)
    assert trainer.epoch == 0 and trainer.init_report == {"missing": [], "unexpected": [], "shape_mismatch": []}
    wider = Trainer(
        load_config(
            QUICKSTART,
            tiny(
                tmp_path,
                f"model.init_from={source / 'checkpoints' / 'last.pt'}",
                "model.decoder_channels=[32, 16, 8, 8, 8]",
                "experiment.name=wider",
            ),
        )
    )
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
    real_loss = trainer.loss_fn.forward
    seen: dict[str, dict] = {}

    def params() -> dict:
        return {k: v.detach().clone() for k, v in trainer.model.named_parameters()}

    def flaky(logits, target, region=None):
        seen.setdefault("calls", {"n": 0})["n"] += 1
        n = seen["calls"]["n"]
        if n == 1:
            seen["before_bad_step"] = params()
            return real_loss(logits, target, region) * float("nan")
        if n == 2:
            seen["after_bad_step"] = params()
        return real_loss(logits, target, region)

    trainer.loss_fn.forward = flaky  # one bad step: skipped with a warning, training goes on
    trainer.train_one_epoch()
    assert "non-finite loss or gradient" in caplog.text and trainer.step == len(trainer.train_loader) - 1
    # Skipped means untouched: no AdamW step (not even weight decay) between the bad step and the next.
    for name, value in seen["before_bad_step"].items():
        assert torch.equal(seen["after_bad_step"][name], value), name
    adam_steps = {int(state["step"]) for state in trainer.optimizer.state.values()}
    assert adam_steps == {len(trainer.train_loader) - 1}
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())

    trainer.loss_fn.forward = lambda logits, target, region=None: real_loss(logits, target, region) * float("inf")
    before = params()
    with pytest.raises(TrainingError, match="non-finite 2 steps in a row"):
        trainer.train_one_epoch()
    assert all(torch.equal(value, before[name]) for name, value in params().items())


def test_best_is_a_copy_not_the_final_weights(tmp_path, monkeypatch):
    trainer = Trainer(load_config(QUICKSTART, tiny(tmp_path, "train.epochs=3")))
    scores = iter([(0.5, 0.11), (0.3, 0.22), (0.2, 0.33)])  # the first epoch is the best
    real_validate = trainer.validate

    def validate():
        iou, threshold = next(scores)
        return {**real_validate(), "iou": iou, "best_threshold": threshold}

    monkeypatch.setattr(trainer, "validate", validate)
    run_dir = trainer.fit()
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert best["epoch"] == 1 and last["epoch"] == 3 and best["best_metric"] == 0.5
    assert best["threshold"] == 0.11 and last["threshold"] == 0.33  # each the threshold chosen at its own epoch
    assert any(not torch.equal(best["model"][k], last["model"][k]) for k in best["model"])


def test_resume_after_ctrl_c_ends_where_an_uninterrupted_run_ends(tmp_path):
    overrides = tiny(tmp_path, "train.epochs=3")
    reference = fit(load_config(QUICKSTART, overrides + ["experiment.name=reference"]))

    trainer = Trainer(load_config(QUICKSTART, overrides + ["experiment.name=stopped"]))
    real_loss, calls = trainer.loss_fn.forward, {"n": 0}

    def ctrl_c_in_epoch_two(logits, target, region=None):
        calls["n"] += 1
        if calls["n"] == len(trainer.train_loader) + 2:  # two steps into the second epoch
            raise KeyboardInterrupt
        return real_loss(logits, target, region)

    trainer.loss_fn.forward = ctrl_c_in_epoch_two  # training steps only: validation uses the loss's sums
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    checkpoints = trainer.run_dir / "checkpoints"
    last, interrupted = (torch.load(checkpoints / name, weights_only=True) for name in ("last.pt", "interrupted.pt"))
    assert last["epoch"] == 1 and not last["interrupted"]  # the exact end of epoch 1, untouched
    assert interrupted["interrupted"] and interrupted["step"] == last["step"] + 1
    with pytest.raises(CheckpointError, match="mid-epoch weights.*resume from last.pt"):
        Trainer(resume_config(checkpoints / "interrupted.pt", []), resume=checkpoints / "interrupted.pt")

    resumed = fit(resume_config(checkpoints / "last.pt", []), resume=checkpoints / "last.pt")
    assert resumed == trainer.run_dir
    assert metrics_rows(resumed) == metrics_rows(reference)
    final, expected = (torch.load(run / "checkpoints" / "last.pt", weights_only=True) for run in (resumed, reference))
    assert final["epoch"] == 3
    for key, value in expected["model"].items():
        assert torch.equal(final["model"][key], value), key


def test_out_of_memory_gives_a_hint(tmp_path, monkeypatch):
    def out_of_memory():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    trainer = Trainer(load_config(QUICKSTART, tiny(tmp_path, "experiment.name=oom")))
    monkeypatch.setattr(trainer, "train_one_epoch", out_of_memory)
    with pytest.raises(TrainingError, match="out of memory at train.batch_size=4.*data.patch_size"):
        trainer.fit()


def test_a_diverging_run_stops_and_never_saves_non_finite_weights(tmp_path):
    with pytest.raises(TrainingError, match="diverged"):
        fit(load_config(QUICKSTART, tiny(tmp_path, "optim.lr=1e6", "train.grad_clip=0", "train.epochs=3")))
    runs = list((tmp_path / "runs").iterdir())  # none when it diverged before its first checkpoint
    for path in (p for run in runs for p in (run / "checkpoints").glob("*.pt")):
        state = torch.load(path, weights_only=True)
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point()), path.name
    for run in runs:
        assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] >= 1


def test_non_finite_validation_loss_stops_the_run(tmp_path, monkeypatch):
    trainer = Trainer(load_config(QUICKSTART, tiny(tmp_path)))
    real_validate = trainer.validate
    losses = iter([0.9, float("nan")])
    monkeypatch.setattr(trainer, "validate", lambda: {**real_validate(), "loss": next(losses)})
    with pytest.raises(TrainingError, match="epoch 2: the validation loss is nan"):
        trainer.fit()
    best, last = (torch.load(trainer.run_dir / "checkpoints" / name, weights_only=True) for name in ("best.pt", "last.pt"))
    assert best["epoch"] == last["epoch"] == 1


def test_validation_loss_depends_on_neither_batch_size_nor_shards(tmp_path):
    trainer = Trainer(load_config(QUICKSTART, tiny(tmp_path, "data.sources.0.n_images=24", "eval.batch_size=4")))
    trainer.train_one_epoch()  # a model with some shape, not the initial one
    whole = trainer.validate()["loss"]
    predictor = model_predictor(trainer.model, trainer.device)
    for batch_size in (1, 3):
        trainer.val_loader = make_loader(trainer.val_set, batch_size, False, 0, 0)
        assert trainer.validate()["loss"] == pytest.approx(whole, rel=1e-6)
    # Two shards, as two ranks see them: their summed sums give the same loss.
    sums = sum(
        score_loader(
            predictor, make_loader(trainer.val_set, 2, False, 0, 0, rank=rank, world_size=2), trainer.device, trainer.cfg, trainer.loss_fn
        )[2]
        for rank in (0, 1)
    )
    assert float(trainer.loss_fn.from_sums(sums)) == pytest.approx(whole, rel=1e-6)


def test_frozen_batchnorm_stays_frozen_after_sync_batchnorm_conversion():
    cfg = load_config(
        None,
        ["model.encoder=resnet18", "model.decoder_channels=[16, 16, 8, 8, 8]", "model.freeze_encoder=partial", "model.unfrozen_stages=1"],
    )
    model = nn.SyncBatchNorm.convert_sync_batchnorm(build_model(cfg.model, encoder_weights=False))
    model.train()
    encoder_bn = {name: m for name, m in model.encoder.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert encoder_bn and all(isinstance(m, nn.SyncBatchNorm) for m in encoder_bn.values())
    frozen = {name for name, m in encoder_bn.items() if not m.weight.requires_grad}
    assert "bn1" in frozen and "layer1.0.bn1" in frozen and "layer4.0.bn1" not in frozen
    for name, module in encoder_bn.items():
        assert module.training == (name not in frozen), name  # frozen: eval mode, running statistics kept


def test_resume_refuses_overrides_that_change_the_run(tmp_path):
    from config import ConfigError
    from engine.trainer import resume_config

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
