"""LoRA through peft: the policy with adapters, its merged weights for the rollout and checkpoints,
and the base model (adapters off) as the reference."""

import contextlib
from collections.abc import Iterable, Iterator

import torch

ADAPTER = "default"  # peft's name for the one adapter a model is given
_PEFT_PREFIX = "base_model.model."


def add_adapters(model: torch.nn.Module, model_config) -> torch.nn.Module:
    """``model`` with LoRA adapters (``lora_rank``, ``lora_alpha``, ``target_modules``,
    ``exclude_modules`` of the policy's model config), only the adapters trainable. Dropout stays 0:
    the update's log-probs must be the ones the rollout sampled with."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=model_config.lora_rank,
        lora_alpha=model_config.lora_alpha,
        target_modules=model_config.target_modules,
        exclude_modules=model_config.exclude_modules,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def has_adapters(model: torch.nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def adapters_off(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """Within it, a model with adapters computes as its base model (the reference policy)."""
    return model.disable_adapter() if has_adapters(model) else contextlib.nullcontext()  # type: ignore[operator]


def lora_scalings(model: torch.nn.Module) -> dict[str, float]:
    """Each adapted module's name and its scale (lora_alpha / r, or peft's variant of it)."""
    adapted = {
        name: module
        for name, module in model.named_modules()
        if isinstance(getattr(module, "scaling", None), dict) and ADAPTER in module.scaling
    }
    transposed = [name for name, module in adapted.items() if getattr(module, "fan_in_fan_out", False)]
    if transposed:  # GPT-2's Conv1D stores its weight transposed; B @ A would be merged the wrong way
        raise ValueError(f"LoRA on transposed (Conv1D) layers is not supported: {transposed[:3]}")
    return {name: float(module.scaling[ADAPTER]) for name, module in adapted.items()}


def merged_weights(
    named: Iterable[tuple[str, torch.Tensor]], scalings: dict[str, float]
) -> Iterator[tuple[str, torch.Tensor]]:
    """The weights of a model with adapters under the base model's names, each adapted weight
    merged (W + scale * B @ A). Reads ``named`` as a stream (``full_weights``) and holds at most the
    pieces of the modules still incomplete."""
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in named:
        name = name.removeprefix(_PEFT_PREFIX)
        if ".base_layer." in name:
            module, _, leaf = name.partition(".base_layer.")
            if leaf != "weight":
                yield f"{module}.{leaf}", tensor
                continue
            part = "W"
        elif f".lora_A.{ADAPTER}.weight" in name or f".lora_B.{ADAPTER}.weight" in name:
            module, _, rest = name.partition(".lora_")
            part = rest[0]
        elif ".lora_" in name:
            raise ValueError(f"{name}: only LoRA's A and B matrices can be merged (no DoRA or embedding adapters)")
        else:
            yield name, tensor
            continue
        pieces = pending.setdefault(module, {})
        pieces[part] = tensor
        if len(pieces) == 3:
            del pending[module]
            base = pieces["W"]
            delta = pieces["B"].to(base.dtype) @ pieces["A"].to(base.dtype)
            yield f"{module}.weight", base + scalings[_PEFT_PREFIX + module] * delta
    if pending:
        raise ValueError(f"adapted modules without all of weight, lora_A and lora_B: {sorted(pending)}")


def check_adapter_targets(model_config, key: str) -> None:
    """Adds the adapters to the model's skeleton (meta device, no weights), so that a target module
    the model lacks is refused at start, naming ``key``, rather than skipped or refused in a worker
    (peft itself refuses only a list of which nothing matches)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_config.path, trust_remote_code=model_config.trust_remote_code)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=model_config.trust_remote_code)
    targets = model_config.target_modules
    tied_names = ("lm_head", "embed_tokens")
    if getattr(config, "tie_word_embeddings", False) and isinstance(targets, list):
        tied = [t for t in targets if t.split(".")[-1] in tied_names]
        if tied:  # vLLM loads the tied head from the embeddings: an adapter there would never reach it
            raise ValueError(f"{key}.target_modules: {', '.join(tied)} is tied to the embeddings in this model")
    if isinstance(targets, list):
        names = [name for name, _ in skeleton.named_modules()]
        missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
        if missing:
            raise ValueError(
                f"{key}.target_modules: {type(skeleton).__name__} has no module named {', '.join(missing)}"
            )
    try:
        add_adapters(skeleton, model_config)
    except ValueError as e:
        raise ValueError(f"{key}.target_modules={targets!r}: {e}") from None
