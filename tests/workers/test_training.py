"""Training engine: labels are the mllm_loss scorer's counted tokens, curriculum stages chain their weights,
a seed reproduces a job bit for bit, a crashed or cancelled job resumes to the same weights, LoRA trains what
LLaVA trains, the projector gets its own learning rate, the re-initialised base."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from backend.scorer_specs import ScoreItem
from backend.train_specs import planned_steps, resolve_train_params
from workers.scorers.lm import load_mllm
from workers.scorers.loader import Failed
from workers.scorers.registry import build_scorer
from workers.training import (
    JobMismatchError,
    Progress,
    TrainResult,
    check_base_model,
    reinit_projector,
    train,
    weights_hash,
)
from workers.training.data import Collator
from workers.training.encoding import IGNORE_INDEX
from workers.training.job import encode_for_training
from workers.training.model import PROJECTOR, prepare_model
from workers.training.trainer import JobCallback, make_trainer, stage_arguments

CPU = torch.device("cpu")
# Small and quick: full fine-tuning, 2 epochs of batches of 8, a checkpoint every 2 steps.
QUICK = {"preset": "quick", "batch_size": 8, "epochs": 2, "checkpoint_every": 2}


def _stages(samples: list[ScoreItem]) -> list[list[ScoreItem]]:
    """Two stages from the varied samples (multi-turn, multi-image, text-only, a missing image, a blank answer)."""
    return [samples[:20], samples[20:]]


@pytest.fixture(scope="module")
def finished(tiny_models: dict[str, Path], samples: list[ScoreItem], tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """One uninterrupted two-stage job (the reference the other runs must reproduce)."""
    return train(tiny_models["llava"], _stages(samples), tmp_path_factory.mktemp("job"), params=QUICK, seed=0)


def _state(path: str | Path) -> dict[str, torch.Tensor]:
    model, _ = load_mllm(str(path), CPU, torch.float32)
    return {k: v.clone() for k, v in model.state_dict().items()}


# --- one truth for masking -------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [{}, {"template": "llava_v1"}, {"include_eos": False, "max_length": 64}])
def test_labels_are_the_scorers_counted_positions(
    tiny_models: dict[str, Path], samples: list[ScoreItem], overrides: dict[str, Any]
) -> None:
    params = resolve_train_params({**QUICK, **overrides})
    scorer_params = {k: v for k, v in overrides.items() if k in ("template", "include_eos", "max_length")}
    scorer = build_scorer("mllm_loss", {"model": str(tiny_models["llava"]), "num_workers": 0, **scorer_params}, device="cpu")
    scorer.load()
    prepared = {x.sample_id: x for x in scorer.prepare_batch(samples)}  # type: ignore[attr-defined]
    [(examples, skipped)] = encode_for_training(str(tiny_models["llava"]), params, [samples])
    trained = {ex.sample_id: ex for ex in examples}
    n_checked = 0
    for sid, x in prepared.items():
        if isinstance(x, Failed):  # the scorer refused it: training skips it (or, image unreadable, drops it later)
            assert sid not in trained or x.error.startswith("image unreadable"), (sid, x.error)
            continue
        ex = trained[sid]
        assert ex.input_ids == x.seq.ids
        counted = [p for p, label in enumerate(ex.labels) if label != IGNORE_INDEX]
        assert counted == x.seq.targets
        assert all(ex.labels[p] == ex.input_ids[p] for p in counted)
        n_checked += 1
    assert n_checked >= len(samples) - 4
    refused = {sid: x.error for sid, x in prepared.items() if isinstance(x, Failed)}
    assert dict(skipped) == {sid: e for sid, e in refused.items() if not e.startswith("image unreadable")}


def test_training_loss_is_the_scorers_loss(tiny_models: dict[str, Path], samples: list[ScoreItem]) -> None:
    """The model's loss on a collated training batch = the scorer's loss_sum of its samples / their tokens."""
    llava = str(tiny_models["llava"])
    ok = [s for s in samples[:12] if s.images and Path(s.images[0]).name.startswith("img")]
    [(examples, _)] = encode_for_training(llava, resolve_train_params(QUICK), [ok])
    model, processor = load_mllm(llava, CPU, torch.float32)
    batch = Collator(processor.image_processor, processor.tokenizer.pad_token_id)(examples)
    with torch.no_grad():
        loss = float(model(**batch).loss)
    scored = build_scorer("mllm_loss", {"model": llava, "num_workers": 0}, device="cpu").score_all(ok)
    loss_sum = sum(r.metrics["loss_sum"] for r in scored.values() if r.metrics)
    tokens = sum(r.metrics["tokens"] for r in scored.values() if r.metrics)
    assert loss == pytest.approx(loss_sum / tokens, rel=1e-4)


# --- jobs ------------------------------------------------------------------------------------------


def test_curriculum_stage_starts_from_the_previous_stages_end(finished: TrainResult, tiny_models: dict[str, Path]) -> None:
    first, second = finished.stages
    model, _ = load_mllm(str(tiny_models["llava"]), CPU, torch.float32)
    assert first.start_hash == weights_hash(model)
    assert second.start_hash == first.end_hash != first.start_hash
    assert second.end_hash != second.start_hash
    assert finished.model_dir == second.model_dir
    model, _ = load_mllm(finished.model_dir, CPU, torch.float32)
    assert weights_hash(model) == second.end_hash  # what evaluation loads is what the stage ended with


def test_job_result_and_folder(finished: TrainResult, samples: list[ScoreItem]) -> None:
    params = resolve_train_params(QUICK)
    assert finished.status == "done"
    for stage, items in zip(finished.stages, _stages(samples), strict=True):
        examples = stage.n_samples + sum(r.startswith("image unreadable") for _, r in stage.skipped)
        assert stage.steps == planned_steps(examples, params) == len(stage.losses)
        assert stage.train_loss == pytest.approx(sum(stage.losses) / len(stage.losses))
        assert stage.n_samples + len(stage.skipped) == len(items)
    reasons = [r for s in finished.stages for _, r in s.skipped]
    assert "empty answer" in reasons and any(r.startswith("image missing") for r in reasons)
    assert sum(r.startswith("image unreadable") for r in reasons) == 2  # dropped by the collator
    out = Path(finished.out_dir)
    assert json.loads((out / "result.json").read_text())["model_dir"] == finished.model_dir
    assert not list(out.glob("stage-*/checkpoint-*"))  # a finished stage keeps its model, not its checkpoints
    assert finished.adapter_dir is None  # full fine-tuning


def test_same_seed_same_weights(finished: TrainResult, tiny_models: dict[str, Path], samples: list[ScoreItem], tmp_path: Path) -> None:
    again = train(tiny_models["llava"], _stages(samples), tmp_path / "again", params=QUICK, seed=0)
    assert [s.end_hash for s in again.stages] == [s.end_hash for s in finished.stages]
    assert [s.losses for s in again.stages] == [s.losses for s in finished.stages]
    other = train(tiny_models["llava"], _stages(samples)[:1], tmp_path / "other", params=QUICK, seed=1)
    assert other.stages[0].end_hash != finished.stages[0].end_hash


def test_killed_and_cancelled_jobs_resume_to_the_same_weights(
    finished: TrainResult, tiny_models: dict[str, Path], samples: list[ScoreItem], tmp_path: Path
) -> None:
    class Killed(Exception):
        pass

    def die_at_step_3(p: Progress) -> None:
        if p.step == 3:  # after the checkpoint of step 2: steps 3 is lost and redone
            raise Killed

    out = tmp_path / "job"
    with pytest.raises(Killed):
        train(tiny_models["llava"], _stages(samples), out, params=QUICK, seed=0, on_progress=die_at_step_3)
    assert (out / "stage-0" / "checkpoint-2").is_dir() and not (out / "stage-0" / "done.json").exists()

    asked = {"n": 0}

    def cancel_in_stage_1() -> bool:
        asked["n"] += 1
        # asked before each stage and after each step: before stage 0, its steps 3-6, before stage 1, its steps 1-2
        return asked["n"] == 8

    cancelled = train(tiny_models["llava"], _stages(samples), out, params=QUICK, seed=0, should_stop=cancel_in_stage_1)
    assert cancelled.status == "cancelled" and cancelled.model_dir is None
    assert [s.index for s in cancelled.stages] == [0]
    assert (out / "stage-1" / "checkpoint-2").is_dir()  # saved on cancel

    seen: list[Progress] = []
    resumed = train(tiny_models["llava"], _stages(samples), out, params=QUICK, seed=0, on_progress=seen.append)
    assert resumed.status == "done"
    assert [s.end_hash for s in resumed.stages] == [s.end_hash for s in finished.stages]
    assert [s.losses for s in resumed.stages] == [s.losses for s in finished.stages]
    assert seen[0].stage == 1 and seen[0].step == finished.stages[0].steps + 3  # only the rest of stage 1 ran


def test_finished_job_returns_its_result_and_other_jobs_are_refused(
    finished: TrainResult, tiny_models: dict[str, Path], samples: list[ScoreItem]
) -> None:
    seen: list[Progress] = []
    again = train(tiny_models["llava"], _stages(samples), finished.out_dir, params=QUICK, seed=0, on_progress=seen.append)
    assert not seen
    assert again.to_json() == TrainResult.from_json(finished.to_json()).to_json()
    with pytest.raises(JobMismatchError, match="seed"):
        train(tiny_models["llava"], _stages(samples), finished.out_dir, params=QUICK, seed=5)
    with pytest.raises(JobMismatchError, match="params"):
        train(tiny_models["llava"], _stages(samples), finished.out_dir, params={**QUICK, "lr": 1e-4}, seed=0)


def test_progress(tiny_models: dict[str, Path], samples: list[ScoreItem], tmp_path: Path) -> None:
    seen: list[Progress] = []
    result = train(tiny_models["llava"], [samples[:9], samples[9:18]], tmp_path, params=QUICK, seed=0, on_progress=seen.append)
    assert [p.step for p in seen] == list(range(1, result.steps + 1))
    assert {p.total_steps for p in seen} == {result.steps}
    assert [p.stage for p in seen] == [0] * result.stages[0].steps + [1] * result.stages[1].steps
    assert all(p.loss is not None and p.loss > 0 for p in seen)
    assert seen[-1].eta_s == 0.0 and seen[-1].samples_per_s > 0


def test_bad_inputs(tiny_models: dict[str, Path], samples: list[ScoreItem], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stages: no stage"):
        train(tiny_models["llava"], [], tmp_path / "a")
    with pytest.raises(ValueError, match=r"stages\[1\]: empty"):
        train(tiny_models["llava"], [samples[:3], []], tmp_path / "b")
    blank = [s for s in samples if s.images and "missing" in s.images[0]]
    with pytest.raises(ValueError, match=r"stages\[0\]: no sample can be trained on \(image missing"):
        train(tiny_models["llava"], [blank], tmp_path / "c")
    with pytest.raises(ValueError, match=r"train\.lr"):
        train(tiny_models["llava"], [samples[:3]], tmp_path / "d", params={"lr": -1})
    with pytest.raises(ValueError, match=r"base_model: .* does not load"):
        train(tmp_path / "no-model", [samples[:3]], tmp_path / "e")
    with pytest.raises(ValueError, match=r"base_model: .* is not an image-text model"):
        train(tiny_models["lm"], [samples[:3]], tmp_path / "f")
    assert not (tmp_path / "e").exists() and not (tmp_path / "f").exists()  # refused before anything is written
    info = check_base_model(tiny_models["llava"])
    assert info["model_type"] == "llava" and info["image_tokens"] == 16 and info["identity"].startswith("sha256:")


# --- what is trained -------------------------------------------------------------------------------


def test_lora_trains_the_adapter_and_projector_only(
    tiny_models: dict[str, Path], samples: list[ScoreItem], tmp_path: Path
) -> None:
    params = {"preset": "paper_lora", "lora_r": 4, "lora_alpha": 8, "grad_accum": 1, "batch_size": 8, "lr": 1e-2,
              "projector_lr": 1e-2, "gradient_checkpointing": True}
    result = train(tiny_models["llava"], [samples[:16]], tmp_path, params=params, seed=0)
    assert result.adapter_dir is not None and (Path(result.adapter_dir) / "adapter_config.json").is_file()
    before, after = _state(tiny_models["llava"]), _state(result.model_dir or "")
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing was trained"
    for k in changed:  # LoRA merged into the language model's linear layers, and the projector
        assert PROJECTOR in k or (".language_model.layers." in k and k.endswith("proj.weight")), k
    assert any(PROJECTOR in k for k in changed)
    assert any("self_attn.q_proj" in k for k in changed) and any("mlp.down_proj" in k for k in changed)


def test_full_fine_tuning_keeps_the_vision_tower(finished: TrainResult, tiny_models: dict[str, Path]) -> None:
    before, after = _state(tiny_models["llava"]), _state(finished.model_dir or "")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any("vision_tower" in k for k in changed)
    assert any(PROJECTOR in k for k in changed) and any("embed_tokens" in k for k in changed)


def test_projector_gets_its_own_learning_rate(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    params = resolve_train_params({**QUICK, "weight_decay": 0.1})
    model, _ = load_mllm(str(tiny_models["llava"]), CPU, torch.float32)
    model = prepare_model(model, params, seed=0, precision="fp32")
    args = stage_arguments(params, tmp_path, seed=0, max_steps=1, precision="fp32", device=CPU)
    callback = JobCallback(stage=0, n_stages=1, steps_before=0, total_steps=1, samples_per_step=1, on_progress=None,
                           should_stop=None)
    trainer = make_trainer(model, args, [], None, 1e-2, callback)
    groups = trainer.create_optimizer().param_groups
    projector = {id(p) for p in model.model.multi_modal_projector.parameters()}
    for g in groups:
        is_projector = {id(p) in projector for p in g["params"]}
        assert len(is_projector) == 1
        assert g["lr"] == (1e-2 if is_projector.pop() else 1e-3)
        assert g["weight_decay"] in (0.0, 0.1)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in groups for p in g["params"]} == trainable
    assert not any(p.requires_grad for p in model.model.vision_tower.parameters())


def test_reinit_projector(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    a = reinit_projector(tiny_models["llava"], tmp_path / "a", seed=3)
    b = reinit_projector(tiny_models["llava"], tmp_path / "b", seed=3)
    c = reinit_projector(tiny_models["llava"], tmp_path / "c", seed=4)
    src, sa, sb, sc = _state(tiny_models["llava"]), _state(a), _state(b), _state(c)
    for k in src:
        if PROJECTOR in k:
            assert not torch.equal(src[k], sa[k]) and torch.equal(sa[k], sb[k])
        else:
            assert torch.equal(src[k], sa[k]), k
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if PROJECTOR in k)
    assert json.loads((a / "qspace_reinit.json").read_text())["seed"] == 3
