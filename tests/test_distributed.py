"""Several training processes through the entrypoint (`accelerate launch --multi_gpu` with
ACCELERATE_USE_CPU: torchrun, gloo), LoRA / QLoRA on a CPU, and the GPU path where one exists."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from tests.e2e import QUICK_TRAINING, as_if_interrupted, job_env, run_entrypoint, spool_rows

PREDICT_EVERY_5 = {"enabled": True, "sample_count": 6, "sample_frequency": "steps", "step_interval": 5,
                   "max_new_tokens": 6, "baseline": True}


@pytest.mark.slow
@pytest.mark.distributed
def test_two_cpu_processes_write_every_prediction_once_from_the_main_process(tmp_path):
    out = tmp_path / "out"
    env = job_env(out, NUM_PROCESSES="2", TRAINING_CONFIG={**QUICK_TRAINING, "save_strategy": "no"},
                  PREDICTIONS_CONFIG=PREDICT_EVERY_5)
    proc = run_entrypoint(env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "--num_processes 2" in log and "--multi_gpu" in log
    assert "processes: 2 on cpu" in log

    keys = Counter((r["step"], r["sample_index"]) for r in spool_rows(out))
    assert set(keys) == {(s, i) for s in (0, 5, 10, 15, 20, 25, 30, 35, 40) for i in range(6)}
    assert set(keys.values()) == {1}  # exactly once: one writer, the main process
    assert log.count("predictions: round ") == 9  # rounds logged by one process only
    assert (out / "final" / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lora", "qlora"])
def test_adapters_train_predict_and_save_on_a_cpu(tmp_path, mode):
    out = tmp_path / "out"
    training = {**QUICK_TRAINING, "max_steps": 10, "save_strategy": "no", "finetuning": mode,
                "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}, "merge_adapter": mode == "lora"}
    env = job_env(out, TRAINING_CONFIG=training, PREDICTIONS_CONFIG={**PREDICT_EVERY_5, "baseline": False})
    proc = run_entrypoint(env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert f"model: {mode} adapter r=4" in log
    assert {r["step"] for r in spool_rows(out)} == {5, 10}  # predictions through the adapter model
    assert (out / "final" / "adapter_model.safetensors").exists()
    assert (out / "final" / "adapter_config.json").exists()
    assert not (out / "final" / "model.safetensors").exists()  # the adapter, not the whole model
    if mode == "lora":
        assert (out / "final-merged" / "model.safetensors").exists()


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 1, reason="needs a CUDA GPU; none is visible on this machine")
def test_every_visible_gpu_trains_and_the_main_process_alone_writes(tmp_path):
    out = tmp_path / "out"
    env = job_env(out, TRAINING_CONFIG={**QUICK_TRAINING, "save_strategy": "no"}, PREDICTIONS_CONFIG=PREDICT_EVERY_5)
    proc = run_entrypoint(env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert f"processes: {torch.cuda.device_count()} on cuda" in log
    keys = Counter((r["step"], r["sample_index"]) for r in spool_rows(out))
    assert set(keys.values()) == {1} and len(keys) == 9 * 6


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_restarted_skip_the_same_rounds_together(tmp_path):
    """The main process knows from the spool which steps were predicted before the restart; every
    rank must skip the same rounds (and their barriers), or their collectives fall out of step."""
    import shutil

    from trainer.checkpoints import MARKER

    out = tmp_path / "out"
    env = job_env(out, NUM_PROCESSES="2", TRAINING_CONFIG={**QUICK_TRAINING, "save_steps": 20},
                  PREDICTIONS_CONFIG={**PREDICT_EVERY_5, "baseline": False})
    first = run_entrypoint(env)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    (out / "checkpoint-40" / MARKER).unlink()  # torn: the restart resumes from checkpoint-20
    shutil.rmtree(out / "final")
    as_if_interrupted(out)
    before = Counter((r["step"], r["sample_index"]) for r in spool_rows(out))

    again = run_entrypoint(env, timeout=300)
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-4000:]
    assert "resume: from checkpoint-20" in log and "restart: 8 rounds already in predictions.jsonl" in log
    assert Counter((r["step"], r["sample_index"]) for r in spool_rows(out)) == before  # nothing twice
