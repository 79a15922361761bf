"""Model and tokenizer loading: the bundled demo or a Hub id / local path; full fine-tuning, LoRA
or QLoRA (4-bit through BitsAndBytesConfig, adapters through peft)."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile

import torch

from trainer.child import Stop
from trainer.config.exits import EXIT_CONFIG, EXIT_UNAVAILABLE
from trainer.config.job import JobConfig
from trainer.config.schema import DEFAULT_OPTIM, TrainingConfig, bitsandbytes_optimizer
from trainer.datacheck import local_files, user_data
from trainer.demo import build_model, demo_tokenizer

log = logging.getLogger(__name__)

#: The demo model's size: learns the reversal task to most samples right in ~1 minute on 2 cores.
DEMO_MODEL_SIZE = {"hidden_size": 128, "layers": 4, "heads": 4}


def resolve_precision(training: TrainingConfig) -> str:
    """"bf16" / "fp16" / "no" (fp32). "auto": bf16 on a GPU that has it. A CPU always trains in
    fp32 (the platform's configurations all ask for bf16; a CPU run is a trial, not the job)."""
    if not torch.cuda.is_available():
        return "no"
    if training.mixed_precision != "auto":
        return training.mixed_precision
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def resolve_optim(training: TrainingConfig) -> tuple[str, str | None]:
    """The optimizer to use, and why it differs from the configured one (None when it does not).
    bitsandbytes optimizers (paged_*, *_8bit) need a CUDA GPU: on a CPU, the default AdamW instead
    — a fallback rather than a refusal, because every platform configuration names one."""
    if bitsandbytes_optimizer(training.optim) and not torch.cuda.is_available():
        return DEFAULT_OPTIM, f"optim {training.optim} needs bitsandbytes on a CUDA GPU; on this CPU: {DEFAULT_OPTIM}"
    return training.optim, None


def resolve_dtype(training: TrainingConfig, precision: str):
    """The weights' dtype when loaded: torch_dtype, or from the precision; fp32 on a CPU."""
    if not torch.cuda.is_available():
        return torch.float32
    if training.torch_dtype != "auto":
        return getattr(torch, training.torch_dtype)
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def _causes(e: BaseException):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


@contextlib.contextmanager
def fetching(cfg: JobConfig, what: str = "MODEL_NAME"):
    """from_pretrained of the job's model, its failures said in one line naming the variable:
    a model that does not exist or is gated is the configuration's (78, the job waits for a fix);
    a Hub or network that cannot be reached is not the job's (69: a restart tries again)."""
    try:
        yield
    except OSError as e:
        name = cfg.training.tokenizer_name if what == "TRAINING_CONFIG.tokenizer_name" else cfg.model_name
        kinds = {type(c).__name__ for c in _causes(e)}
        token = "HF_TOKEN is set: its account has no access" if cfg.secrets.hf_token else "HF_TOKEN is not set"
        if "GatedRepoError" in kinds:
            raise Stop(EXIT_CONFIG, f"configuration error: {what}: {name} is a gated model ({token}); set HF_TOKEN to "
                       "a token of an account that accepted the model's terms on the Hub") from None
        if "RepositoryNotFoundError" in kinds:
            raise Stop(EXIT_CONFIG, f"configuration error: {what}: no model {name!r} on the Hugging Face Hub (a typo? "
                       f"a private model needs HF_TOKEN; {token}); or a local folder written by save_pretrained") from None
        offline = kinds & {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectError", "ConnectTimeout",
                           "ReadTimeout", "gaierror", "ConnectionError", "TimeoutError"}
        if offline:
            raise Stop(EXIT_UNAVAILABLE, f"{what}: {name} could not be fetched: the Hugging Face Hub is not reachable "
                       "from this machine (no network, or the Hub is down) and it is not in the local cache. Not the "
                       "job's fault: a restart tries again") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Stop(EXIT_CONFIG, f"configuration error: {what}: {name} cannot be loaded: {first}") from None


def load_tokenizer(cfg: JobConfig):
    if cfg.is_demo:  # trained on the job's own data when it has some (trainer/datacheck.py)
        return demo_tokenizer(local_files(cfg) if user_data(cfg) else None)
    # transformers and peft are imported where used: the parent imports this module for
    # resolve_optim / resolve_precision (torch only).
    from transformers import AutoTokenizer

    t = cfg.training
    with fetching(cfg, "TRAINING_CONFIG.tokenizer_name" if t.tokenizer_name else "MODEL_NAME"):
        tokenizer = AutoTokenizer.from_pretrained(t.tokenizer_name or cfg.model_name,
                                                  trust_remote_code=t.trust_remote_code)
    if t.padding_side:
        tokenizer.padding_side = t.padding_side
    if tokenizer.pad_token is None:  # batched training and generation need one; EOS is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _lora_config(training: TrainingConfig):
    from peft import LoraConfig

    lora = training.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        bias=lora.bias,
        modules_to_save=lora.modules_to_save,
        task_type="CAUSAL_LM",
    )


def load_model(cfg: JobConfig, tokenizer):
    """The model to train, adapter-wrapped for LoRA / QLoRA."""
    training = cfg.training
    precision = resolve_precision(training)
    dtype = resolve_dtype(training, precision)
    if cfg.is_demo:
        model = build_model(tokenizer, **DEMO_MODEL_SIZE)
        if training.quant_bits is None:
            return _with_adapter(model, training)
        # Quantized weights are made by from_pretrained: save the fresh demo model and load it back
        # (the weights are in memory once loaded, so the folder can go).
        with tempfile.TemporaryDirectory(prefix="demo-model-") as source:
            model.save_pretrained(source)
            return _load_pretrained(source, training, dtype)
    with fetching(cfg):
        return _load_pretrained(cfg.model_name, training, dtype)


def quantization_config(training: TrainingConfig, dtype):
    """BitsAndBytesConfig for 4-bit (qlora) or 8-bit LoRA, None when unquantized."""
    from transformers import BitsAndBytesConfig

    q = training.quantization
    if training.quant_bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    if training.quant_bits == 4:
        # a CPU computes in fp32 whatever the configuration says (as it trains in fp32)
        asked = q.bnb_4bit_compute_dtype if torch.cuda.is_available() else None
        compute = getattr(torch, asked) if asked else dtype
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=q.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=q.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=compute,
        )
    return None


def _load_pretrained(source: str, training: TrainingConfig, dtype):
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype, "trust_remote_code": training.trust_remote_code}
    quantization = quantization_config(training, dtype)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        if torch.cuda.is_available():  # quantized weights cannot be moved after loading: place them per rank
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=training.gradient_checkpointing
        )
    return _with_adapter(model, training)


def _with_adapter(model, training: TrainingConfig):
    if training.finetuning == "full":
        return model
    from peft import get_peft_model

    model = get_peft_model(model, _lora_config(training))
    trainable, total = model.get_nb_trainable_parameters()
    bits = f", {training.quant_bits}-bit base weights" if training.quant_bits else ""
    log.info(f"model: {training.finetuning} adapter r={training.lora.r}{bits}: {trainable:,} of {total:,} parameters trainable")
    return model


def save_final(model, tokenizer, output_dir, training: TrainingConfig):
    """Save the result: the full model, or the adapter (and, when asked, the merged model)."""
    final = output_dir / "final"
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    log.info(f"saved: {'adapter' if training.finetuning != 'full' else 'model'} and tokenizer in {final}")
    if training.finetuning != "full" and training.merge_adapter:
        merged_dir = output_dir / "final-merged"
        if training.quant_bits:
            log.info(f"merge_adapter: peft merges into the {training.quant_bits}-bit weights and quantizes them again (rounding errors); "
                "the merged model stays quantized. For a 16-bit merge, load the base model in 16-bit and merge the adapter")
        merged = model.merge_and_unload()
        merged.save_pretrained(merged_dir)
        tokenizer.save_pretrained(merged_dir)
        log.info(f"saved: merged model in {merged_dir}")
