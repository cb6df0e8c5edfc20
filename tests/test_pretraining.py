"""`nnunetv2_dropgen pretrain`: label maps in, two views of random appearance, contrastive loss, weights out.

Everything runs on the CPU with a tiny anatomix layout (ngf 4, two levels, 8 features) and 16^3 or 32^3
patches. One brief pretraining run (module fixture) serves the tests of its outputs, its loss and its
stability; the others train for a few steps each.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.multiprocessing as mp
from _core_helpers import one_torch_thread  # noqa: F401  (module-wide fixture)

from nnunetv2_dropgen.cli import pretrain_command
from nnunetv2_dropgen.feature_extractors import (
    AnatomixConfig,
    ExtractorSpec,
    anatomix_spec,
    registered_extractor,
)
from nnunetv2_dropgen.pretraining import (
    CompositionSettings,
    ContrastiveObjective,
    LabelMapError,
    PretrainingError,
    PretrainSettings,
    StabilitySettings,
    balanced_voxel_sample,
    check_settings,
    compose_label_maps,
    pool_from_folder,
    pool_from_synthetic,
    pretrain,
    render_views,
    supervised_contrastive_loss,
)
from nnunetv2_dropgen.pretraining import loop as loop_module
from nnunetv2_dropgen.pretraining.checkpoint import CheckpointError, checkpoint_path, load_checkpoint
from nnunetv2_dropgen.pretraining.loop import warm_restart_warning
from nnunetv2_dropgen.pretraining.objective import level_channels
from nnunetv2_dropgen.pretraining.progress import PANELS, progress_figure, progress_path
from nnunetv2_dropgen.synthetic import random_label_map
from nnunetv2_dropgen.weights import WeightsError, read_record, sha256_file

TINY = "test-pretrain-tiny"
PATCH = (16, 16, 16)
QUICK_STABILITY = StabilitySettings(
    maps=3, appearances=3, samples=128, probe_samples=1024, probe_steps=50, patch_size=16
)
BRIEF_STEPS = 200


def tiny_spec(name: str = TINY) -> ExtractorSpec:
    return anatomix_spec(name, AnatomixConfig(output_nc=8, num_downs=2, ngf=4))


@pytest.fixture(scope="module")
def spec():
    with registered_extractor(tiny_spec()) as registered:
        yield registered


@pytest.fixture(scope="module")
def pool():
    return pool_from_synthetic(16, seed=0)


def quick_settings(out: Path, **changes) -> PretrainSettings:
    """Settings small enough for a step in well under a second on a CPU (a few structures in a 16^3 patch)."""
    base = {
        "architecture": TINY,
        "out": out,
        "steps": 2,
        "batch_size": 2,
        "patch_size": PATCH,
        "lr": 1e-3,
        "samples_per_level": 128,
        "head_width": 64,
        "checkpoint_every": 1000,
        "stability": QUICK_STABILITY,
        "composition": CompositionSettings(structures=(3, 8)),
    }
    return PretrainSettings(**{**base, **changes})


@pytest.fixture(scope="module")
def brief_run(spec, pool, tmp_path_factory):
    """80 steps on 16^3 patches (about 15 s), judged on held-out synthetic maps the run never trained on."""
    out = tmp_path_factory.mktemp("brief") / "brief.pth"
    held_out = pool_from_synthetic(8, seed=99)
    result = pretrain(quick_settings(out, steps=BRIEF_STEPS, evaluate_every=40), spec, pool, held_out, command="pytest")
    return out, result


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    pretrain_command.register(parser.add_subparsers())
    args = parser.parse_args(["pretrain", *argv])
    return args.func(args)


def explained_variance(image: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of the image's variance explained by its mean per label (1: the image is a function of the labels)."""
    image, labels = image.flatten().double(), labels.flatten()
    sums = torch.zeros(int(labels.max()) + 1, dtype=torch.float64).index_add_(0, labels, image)
    counts = torch.bincount(labels).double().clamp_min(1)
    residual = image - (sums / counts)[labels]
    return float(1 - residual.var() / image.var())


# ---------------------------------------------------------------------------------------------------------
# data: composition and views


def test_composition_gives_a_new_reproducible_layout_each_step(pool):
    maps = [compose_label_maps(pool, 2, (32, 32, 32), torch.Generator().manual_seed(seed)) for seed in (0, 0, 1)]
    assert maps[0].shape == (2, 1, 32, 32, 32) and maps[0].dtype == torch.int64
    assert torch.equal(maps[0], maps[1]), "the same seed must compose the same label maps"
    assert (maps[0] != maps[2]).float().mean() > 0.2, "another seed must give another layout"
    assert (maps[0][0] != maps[0][1]).float().mean() > 0.2, "maps of one batch must differ"
    for label_map in maps[0]:
        assert len(torch.unique(label_map)) >= 3, "a composed map should hold several structures"


def test_views_share_geometry_and_differ_in_appearance(pool):
    generator = torch.Generator().manual_seed(3)
    few = CompositionSettings(structures=(3, 8))  # with 40 labels, per-label means would fit any image a little
    labels = compose_label_maps(pool, 4, (32, 32, 32), generator, few)
    views = render_views(labels, generator)
    assert views.shape == (2, 4, 1, 32, 32, 32)
    assert float(views.min()) == 0.0 and float(views.max()) == 1.0
    other_labels = compose_label_maps(pool, 4, (32, 32, 32), generator, few)
    for index in range(4):
        own = [explained_variance(views[v, index], labels[index]) for v in range(2)]
        foreign = [explained_variance(views[v, index], other_labels[index]) for v in range(2)]
        # geometry: each view is largely a function of its own label map, far less of another map
        # (anatomix's second stage, strong noise, motion and bias, leaves labels explaining less than a clean render)
        assert min(own) > max(foreign) and np.mean(own) > np.mean(foreign) + 0.1, f"map {index}: {own} vs {foreign}"
    # appearance: the two views of one map differ clearly, voxel by voxel and in the intensity of each label
    assert float((views[0] - views[1]).abs().mean()) > 0.1
    correlations = [float(torch.corrcoef(views[:, i].flatten(1))[0, 1]) for i in range(4)]
    assert np.mean(np.abs(correlations)) < 0.8, correlations


def test_views_are_reproducible_from_the_seed(pool):
    labels = compose_label_maps(pool, 2, PATCH, torch.Generator().manual_seed(0))
    first, again, other = (render_views(labels, torch.Generator().manual_seed(s)) for s in (5, 5, 6))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


# ---------------------------------------------------------------------------------------------------------
# loss


def _reference_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """The supervised contrastive loss written out anchor by anchor (SupCon, all views as anchors)."""
    total, anchors = 0.0, 0
    for z, lab in zip(embeddings, labels, strict=True):
        z = torch.nn.functional.normalize(z.double().flatten(0, 1), dim=-1)
        lab = lab.repeat(2)
        for i in range(len(z)):
            others = [j for j in range(len(z)) if j != i]
            denominator = sum(math.exp(float(z[i] @ z[j]) / temperature) for j in others)
            positives = [j for j in others if lab[j] == lab[i]]
            total -= sum(math.log(math.exp(float(z[i] @ z[j]) / temperature) / denominator) for j in positives) / len(
                positives
            )
            anchors += 1
    return total / anchors


def test_loss_matches_the_formula_written_out():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn((2, 2, 6, 5), generator=generator)
    labels = torch.tensor([[0, 0, 1, 1, 2, 0], [3, 3, 3, 1, 1, 2]])
    loss = float(supervised_contrastive_loss(embeddings, labels, 0.33))
    assert loss == pytest.approx(_reference_loss(embeddings, labels, 0.33), rel=1e-5)


def test_loss_is_low_when_same_labels_agree():
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (2, 64), generator=generator)
    agreeing = torch.nn.functional.one_hot(labels, 8).float()[:, None].expand(-1, 2, -1, -1)
    agreeing = agreeing + 0.05 * torch.randn((2, 2, 64, 8), generator=generator)
    scrambled = agreeing[:, :, torch.randperm(64, generator=generator)]
    assert supervised_contrastive_loss(agreeing, labels) < supervised_contrastive_loss(scrambled, labels) - 1.0


def test_balanced_sampling_represents_every_label():
    labels = torch.zeros((1, 4096), dtype=torch.long)
    labels[0, :40] = 1  # 1 % of the voxels
    labels[0, 40:50] = 2  # 10 voxels
    chosen = balanced_voxel_sample(labels, 256, torch.Generator().manual_seed(0))
    assert chosen.shape == (1, 256) and len(torch.unique(chosen)) == 256
    counts = torch.bincount(labels[0, chosen[0]], minlength=3)
    assert counts[2] == 10, "a label with fewer voxels than its share is sampled entirely"
    assert counts[1] > 30, f"a 1 % label must get about a third of the samples, got {counts.tolist()}"


# ---------------------------------------------------------------------------------------------------------
# training


def _batch(pool, seed: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = compose_label_maps(pool, batch, PATCH, generator, quick_settings(Path("unused.pth")).composition)
    return render_views(labels, generator).flatten(0, 1), labels


def test_pretrain_writes_strict_weights_a_record_and_a_checkpoint(spec, pool, brief_run):
    out, result = brief_run
    assert result.step == BRIEF_STEPS and not result.interrupted and len(result.losses) == BRIEF_STEPS
    module = spec.build()
    module.load_state_dict(torch.load(out, weights_only=True), strict=True)
    record = read_record(out)
    assert record is not None and record["sha256"] == sha256_file(out) == result.sha256
    assert record["architecture"] == TINY and record["steps"] == BRIEF_STEPS and record["seed"] == 0
    assert record["metrics"]["trained"]["gap"] == pytest.approx(result.metrics.gap)
    assert record["metrics"]["random_weights"] is not None
    assert [entry["step"] for entry in record["metrics"]["history"]] == [40, 80, 120, 160, 200]
    assert record["command"] == "pytest" and "synthetic" in record["data"]["sources"][0]
    assert record["time"]["training_seconds"] > 0
    assert load_checkpoint(checkpoint_path(out))["step"] == BRIEF_STEPS
    with pytest.raises(PretrainingError, match="pass --resume to continue that run"):
        pretrain(quick_settings(out, steps=BRIEF_STEPS + 1), spec, pool, pool)


def test_pretrain_draws_its_stability_curve_beside_the_weights(brief_run):
    out, _ = brief_run
    curve = progress_path(out)
    assert curve == out.with_name("brief.progress.png")
    assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stability_curve_draws_every_evaluation_the_reference_and_the_best():
    history = [
        {"step": 10 * (i + 1), "gap": 0.2 * i, "probe_dice_other": 0.1 * i, "probe_dice_fitted": 0.15 * i}
        for i in range(4)
    ]
    random_weights = {"gap": 0.05, "probe_dice_other": 0.07, "probe_dice_fitted": 0.2}
    figure = progress_figure(history, best=history[2], random_weights=random_weights)
    for ax, (_, curves) in zip(figure.axes, PANELS, strict=True):
        lines = ax.get_lines()
        for key, _ in curves:
            drawn = [line for line in lines if list(line.get_ydata()) == [entry[key] for entry in history]]
            assert len(drawn) == 1 and list(drawn[0].get_xdata()) == [10, 20, 30, 40], key
            dashed = [
                line for line in lines if line.get_linestyle() == "--" and line.get_color() == drawn[0].get_color()
            ]
            assert [list(line.get_ydata()) for line in dashed] == [[random_weights[key]] * 2], key
            stars = [line for line in lines if line.get_marker() == "*" and line.get_color() == drawn[0].get_color()]
            assert [(list(s.get_xdata()), list(s.get_ydata())) for s in stars] == [([30], [history[2][key]])], key
    with pytest.raises(ValueError, match="evaluate-every"):
        progress_figure([])


def test_a_few_steps_lower_the_loss(brief_run):
    losses = brief_run[1].losses
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < first - 0.05, f"mean loss of the first 10 steps {first:.3f}, of the last 10 {last:.3f}"


def test_two_views_of_one_map_score_better_than_mismatched_maps(spec, pool, brief_run):
    out, _ = brief_run
    extractor = spec.build()
    objective = ContrastiveObjective(extractor, level_channels(extractor, spec.min_spatial_size), 64, 128)
    objective.load_state_dict(load_checkpoint(checkpoint_path(out))["objective"])
    matched, mismatched = [], []
    for seed in (100, 102, 104):
        views, labels = _batch(pool, seed=seed)
        other_views, _ = _batch(pool, seed=seed + 1)
        with torch.no_grad():
            matched.append(float(objective(views, labels, torch.Generator().manual_seed(7))))
            # second views rendered from other label maps
            unrelated = torch.cat([views[:2], other_views[2:]])
            mismatched.append(float(objective(unrelated, labels, torch.Generator().manual_seed(7))))
    assert np.mean(matched) < np.mean(mismatched) - 0.02, (matched, mismatched)


def test_stability_of_a_briefly_trained_extractor_beats_random_weights(brief_run):
    """Can fail: 200 steps must already make a voxel's features agree across appearances far more than random
    weights do, on held-out structures of kinds the run never saw. (Whether a linear probe transfers is asked
    of the shipped extractor, test_minimix: this tiny network learns that far more slowly.)"""
    out, result = brief_run
    random = read_record(out)["metrics"]["random_weights"]
    assert result.metrics.gap > random["gap"] + 0.1, f"trained {result.metrics.describe()}; random {random}"


def test_resume_continues_exactly_where_the_run_stopped(spec, pool, tmp_path):
    straight = pretrain(quick_settings(tmp_path / "straight.pth", steps=4), spec, pool, pool)
    pretrain(quick_settings(tmp_path / "resumed.pth", steps=2), spec, pool, pool)
    resumed = pretrain(quick_settings(tmp_path / "resumed.pth", steps=4, resume=True), spec, pool, pool)
    assert resumed.step == 4
    state = load_checkpoint(checkpoint_path(tmp_path / "resumed.pth"))
    assert state["step"] == 4
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {4}, "AdamW must continue its moments"
    for key, value in straight.state_dict.items():
        torch.testing.assert_close(resumed.state_dict[key], value, msg=f"resumed run differs in {key}")
    with pytest.raises(CheckpointError, match="other settings"):
        pretrain(quick_settings(tmp_path / "resumed.pth", steps=5, resume=True, batch_size=1), spec, pool, pool)
    other_data = pool_from_synthetic(12, seed=1)
    with pytest.raises(CheckpointError, match=r"structures 16 -> 12"):
        pretrain(quick_settings(tmp_path / "resumed.pth", steps=5, resume=True), spec, other_data, pool)
    with pytest.raises(CheckpointError, match="init None -> 'anatomix'"):
        pretrain(quick_settings(tmp_path / "resumed.pth", steps=5, resume=True, init="anatomix"), spec, pool, pool)
    with pytest.raises(CheckpointError, match="is at step 4, beyond --steps 3"):
        pretrain(quick_settings(tmp_path / "resumed.pth", steps=3, resume=True), spec, pool, pool)
    with pytest.raises(CheckpointError, match="lr_decay_fraction 0.2 -> 0.5"):
        pretrain(
            quick_settings(tmp_path / "resumed.pth", steps=5, resume=True, lr_decay_fraction=0.5), spec, pool, pool
        )
    assert load_checkpoint(checkpoint_path(tmp_path / "resumed.pth"))["step"] == 4, "refusals change nothing"


def test_a_longer_resume_after_the_decay_began_says_it_restarts_the_learning_rate(tmp_path):
    """The schedule follows --steps: resumed with more steps, a run whose rate had decayed goes back to the full
    rate. Continuing one still at the full rate is seamless and says nothing."""
    decaying = {"settings": {"steps": 1000}, "step": 900}  # decay over the last 200 steps: 1 - 100/201 at step 899
    warning = warm_restart_warning(decaying, quick_settings(tmp_path / "a.pth", steps=2000))
    assert warning is not None and "decayed to 0.502 x --lr at step 900" in warning and "back to 1.000" in warning
    assert warm_restart_warning(decaying, quick_settings(tmp_path / "a.pth", steps=1000)) is None
    early = {"settings": {"steps": 1000}, "step": 500}
    assert warm_restart_warning(early, quick_settings(tmp_path / "a.pth", steps=2000)) is None


def test_a_new_run_never_replaces_earlier_weights(spec, pool, tmp_path):
    out = tmp_path / "earlier.pth"
    out.write_bytes(b"weights of an earlier run")
    with pytest.raises(PretrainingError, match=r"exists \(the weights of an earlier run\); choose another --out"):
        check_settings(quick_settings(out, steps=2), spec)  # no checkpoint beside it: --resume is not offered
    check_settings(quick_settings(out, steps=2, resume=True), spec)
    assert out.read_bytes() == b"weights of an earlier run"
    out.unlink()
    checkpoint_path(out).write_bytes(b"checkpoint of an earlier run")  # its checkpoint alone refuses a new run too
    with pytest.raises(CheckpointError, match="pass --resume to continue it"):
        pretrain(quick_settings(out, steps=2), spec, pool, pool)
    assert not out.exists() and checkpoint_path(out).read_bytes() == b"checkpoint of an earlier run"


def test_ctrl_c_leaves_a_usable_checkpoint_and_weights(spec, pool, tmp_path, monkeypatch):
    calls = {"n": 0}
    compose = loop_module.compose_label_maps

    def interrupted_on_third_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return compose(*args, **kwargs)

    monkeypatch.setattr(loop_module, "compose_label_maps", interrupted_on_third_step)
    out = tmp_path / "stopped.pth"
    result = pretrain(quick_settings(out, steps=10), spec, pool, pool)
    assert result.interrupted and result.step == 2
    spec.build().load_state_dict(torch.load(out, weights_only=True), strict=True)
    record = read_record(out)
    assert record["interrupted"] is True and record["steps"] == 2 and record["sha256"] == sha256_file(out)
    monkeypatch.setattr(loop_module, "compose_label_maps", compose)
    assert pretrain(quick_settings(out, steps=3, resume=True), spec, pool, pool).step == 3


def test_init_from_an_extractor_whose_build_is_pretrained(spec):
    """`--init NAME` for an extractor registered with pretrained_by_build=True starts from the model it builds."""
    import dataclasses

    from nnunetv2_dropgen.pretraining.references import initialise_extractor

    torch.manual_seed(1)
    ready_model = spec.build()
    ready = dataclasses.replace(spec, name="test-pretrain-ready", build=lambda: ready_model, pretrained_by_build=True)
    with registered_extractor(ready):
        extractor = spec.build()
        assert "the model its build function returns" in initialise_extractor(extractor, ready.name, spec.name)
    for key, value in ready_model.state_dict().items():
        assert torch.equal(extractor.state_dict()[key], value), key


def test_init_from_a_weights_file_starts_from_those_weights(spec, pool, tmp_path):
    start = tmp_path / "start.pth"
    torch.manual_seed(123)
    torch.save(spec.build().state_dict(), start)
    result = pretrain(quick_settings(tmp_path / "from_file.pth", steps=1, lr=0.0, init=str(start)), spec, pool, pool)
    expected = torch.load(start, weights_only=True)
    for key, _ in spec.build().named_parameters():
        torch.testing.assert_close(result.state_dict[key], expected[key], msg=f"{key} did not start from the file")
    assert "start.pth" in read_record(tmp_path / "from_file.pth")["init"]
    with pytest.raises(WeightsError, match="neither a registered extractor"):
        pretrain(quick_settings(tmp_path / "other.pth", steps=1, init="no-such-source"), spec, pool, pool)


# ---------------------------------------------------------------------------------------------------------
# label folders and the command line


def _write_labels_tr(folder: Path, cases: int = 2) -> int:
    """A tiny nnU-Net labelsTr (anisotropic spacing); returns the number of labelled structures written."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    structures = 0
    for case in range(cases):
        labels = random_label_map((12, 20, 24), num_labels=3, rng=rng)
        structures += len(np.unique(labels)) - 1
        image = sitk.GetImageFromArray(labels)
        image.SetSpacing((0.8, 0.8, 2.0))
        sitk.WriteImage(image, str(folder / f"case_{case:03d}.nii.gz"))
    (folder / "notes.txt").write_text("not a label map")
    return structures


def test_label_folder_becomes_a_pool_and_pretrains(spec, tmp_path, capsys):
    folder = tmp_path / "Dataset001_Tiny" / "labelsTr"
    structures = _write_labels_tr(folder)
    pool = pool_from_folder(folder, canvas=16)
    assert len(pool) == structures and pool.masks.shape[1:] == (1, 16, 16, 16)
    assert bool((pool.extents > 0).all())
    assert all(bool(mask.any()) for mask in pool.masks)
    out = tmp_path / "from_labels.pth"
    argv = ["--architecture", TINY, "--labels", str(folder), "--out", str(out), "--steps", "2", "--patch-size", "16"]
    assert run_cli(*argv, "--evaluate-every", "0", "--device", "cpu") == 0
    record = read_record(out)
    assert record["steps"] == 2 and str(folder.resolve()) in record["data"]["sources"][0]
    spec.build().load_state_dict(torch.load(out, weights_only=True), strict=True)


def test_bad_label_input_is_refused_with_a_sentence(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LabelMapError, match="holds no label maps"):
        pool_from_folder(empty)
    with pytest.raises(LabelMapError, match="does not exist"):
        pool_from_folder(tmp_path / "missing")
    images = tmp_path / "scans"
    images.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((8, 8, 8))), str(images / "a.nii.gz"))
    with pytest.raises(LabelMapError, match="non-integer"):
        pool_from_folder(images)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.nii.gz").write_bytes(b"not an image")
    with pytest.raises(LabelMapError, match="cannot read"):
        pool_from_folder(broken)


def test_cli_refuses_bad_arguments_before_training(spec, tmp_path, capsys):
    base = ["--architecture", TINY, "--synthetic", "2", "--steps", "1"]
    assert run_cli(*base, "--out", str(tmp_path / "a.pth"), "--patch-size", "18") == 1
    assert "multiple of 4" in capsys.readouterr().err
    assert run_cli(*base, "--out", str(tmp_path / "missing" / "a.pth"), "--patch-size", "16") == 1
    assert "does not exist" in capsys.readouterr().err
    assert run_cli("--architecture", "no-such-extractor", "--synthetic", "2", "--steps", "1", "--out", "a.pth") == 1
    assert "unknown feature extractor" in capsys.readouterr().err
    assert run_cli("--architecture", TINY, "--steps", "1", "--out", str(tmp_path / "a.pth"), "--patch-size", "16") == 1
    assert "--labels" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "refused runs must write nothing"


def test_evaluate_only_compares_with_random_weights_and_says_why_anatomix_is_missing(spec, tmp_path, capsys):
    weights = tmp_path / "w.pth"
    torch.save(spec.build().state_dict(), weights)
    assert (
        run_cli("--architecture", TINY, "--evaluate-only", str(weights), "--synthetic", "4", "--patch-size", "16") == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert any(str(weights) in line and "gap" in line for line in lines)
    assert any(line.strip().startswith("random weights") and "probe" in line for line in lines)
    assert any("published anatomix: not measured" in line for line in lines)


# ---------------------------------------------------------------------------------------------------------
# stability metric and DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, folder: str) -> None:
    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(world_size)}
    )
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    with registered_extractor(tiny_spec()) as registered:
        pool = pool_from_synthetic(4, seed=0, canvas=16)
        result = pretrain(quick_settings(Path(folder) / "ddp.pth", steps=3), registered, pool, pool)
    torch.save({"step": result.step, "state": result.state_dict}, Path(folder) / f"rank{rank}.pt")


def test_ddp_with_gloo_on_two_processes_keeps_ranks_identical(tmp_path):
    world_size = 2
    context = mp.spawn(_ddp_worker, args=(world_size, _free_port(), str(tmp_path)), nprocs=world_size, join=False)
    deadline = time.monotonic() + 120
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the 2-process DDP run did not finish within 120 s")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    assert [r["step"] for r in ranks] == [3, 3]
    for key, value in ranks[0]["state"].items():
        assert torch.equal(ranks[1]["state"][key], value), f"ranks differ in {key}"
    written = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("rank"))
    expected = ["ddp.best.json", "ddp.best.pth", "ddp.checkpoint.pth", "ddp.json", "ddp.progress.png", "ddp.pth"]
    assert written == expected, "only rank 0 writes files"
    assert json.loads((tmp_path / "ddp.json").read_text())["world_size"] == 2
    saved = torch.load(tmp_path / "ddp.pth", weights_only=True)
    for key, value in saved.items():
        assert torch.equal(ranks[0]["state"][key], value)


def test_sigterm_stops_like_ctrl_c_with_checkpoint_and_weights(spec, tmp_path):
    """`kill` (a cluster's time limit) must not lose the run: the command writes what Ctrl-C writes and says how
    to resume."""
    out = tmp_path / "terminated.pth"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from test_pretraining import tiny_spec\n"
        "from nnunetv2_dropgen.feature_extractors import register_extractor\n"
        "register_extractor(tiny_spec())\n"
        "from nnunetv2_dropgen.cli.main import main\n"
        "sys.exit(main(['pretrain', '--architecture', 'test-pretrain-tiny', '--synthetic', '8', '--patch-size', "
        "'16', '--steps', '100000', '--evaluate-every', '0', '--checkpoint-every', '1', '--device', 'cpu', "
        "'--out', sys.argv[2]]))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-u", "-c", code, str(Path(__file__).parent), str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    started = process.stdout.readline()  # printed once training has begun (inside the handler)
    assert started.startswith("pretraining test-pretrain-tiny"), started
    deadline = time.monotonic() + 120
    while not checkpoint_path(out).exists() and time.monotonic() < deadline:  # the first step's checkpoint
        time.sleep(0.2)  # (waits for a step however busy the machine; a fixed sleep saw none under load)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "continue with the same command and --resume" in stderr
    record = read_record(out)
    assert record["interrupted"] is True and record["steps"] > 0 and record["sha256"] == sha256_file(out)
    assert load_checkpoint(checkpoint_path(out))["step"] == record["steps"]
