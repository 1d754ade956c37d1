"""mGTE's configuration class, for loading gte-multilingual-reranker-base without running code from the hub.

The checkpoint's config.json names ``model_type: "new"`` and a config class in another repository
(``auto_map``: ``Alibaba-NLP/new-impl--configuration.NewConfig``), which transformers would fetch and run
under ``trust_remote_code``. vLLM needs only the parsed fields, in a class named ``NewConfig``
(``GteNewModelConfig`` checks the name). This one holds the same fields with the same defaults, and is
registered with transformers' ``AutoConfig`` for ``"new"`` before the engine loads (``register``), so
neither the worker nor vLLM runs code shipped with a checkpoint.

``gte_config`` gives the reference engine transformers' own port of mGTE (``GteConfig``), with NTK-scaled
rotary positions written as the linear scaling they are (base·f, frequencies ÷ f^(2/d))."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig

# The fields of the hub's NewConfig, with its defaults (Alibaba-NLP/new-impl, configuration.py).
NEW_CONFIG_DEFAULTS: dict[str, Any] = {
    "vocab_size": 30528,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.0,
    "max_position_embeddings": 2048,
    "type_vocab_size": 1,
    "initializer_range": 0.02,
    "layer_norm_type": "layer_norm",
    "layer_norm_eps": 1e-12,
    "position_embedding_type": "rope",
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "classifier_dropout": None,
    "pack_qkv": True,
    "unpad_inputs": False,
    "use_memory_efficient_attention": False,
    "logn_attention_scale": False,
    "logn_attention_clip1": False,
}


class NewConfig(PretrainedConfig):
    model_type = "new"

    def __init__(self, **kwargs: Any):
        fields = {name: kwargs.pop(name, default) for name, default in NEW_CONFIG_DEFAULTS.items()}
        super().__init__(**kwargs)
        for name, value in fields.items():
            setattr(self, name, value)


def register() -> None:
    """transformers' AutoConfig reads ``model_type: "new"`` with this class (idempotent)."""
    try:
        AutoConfig.register("new", NewConfig)
    except ValueError:  # already registered (by this function, in this process)
        pass


def rope_parameters(config: dict) -> dict:
    """transformers' rope parameters for mGTE's ``rope_theta`` and ``rope_scaling`` (none, or fixed NTK)."""
    theta = float(config.get("rope_theta") or 10000.0)
    scaling = config.get("rope_scaling") or None
    if scaling is None:
        return {"rope_type": "default", "rope_theta": theta}
    kind = scaling.get("type") or scaling.get("rope_type")
    if kind != "ntk" or scaling.get("mixed_b") is not None:
        raise ValueError(f"rope_scaling {scaling} has no transformers reference here (fixed NTK only)")
    factor = float(scaling["factor"])
    dim = int(config["hidden_size"]) // int(config["num_attention_heads"])
    return {"rope_type": "linear", "factor": factor ** (2 / dim), "rope_theta": theta * factor}


def gte_config(config: dict) -> Any:
    """transformers' ``GteConfig`` for an mGTE config.json (the reference engine's model)."""
    from transformers import GteConfig

    fields = (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id", "hidden_act",
        "id2label", "label2id", "classifier_dropout", "initializer_range",
    )  # fmt: skip
    return GteConfig(**{k: config[k] for k in fields if k in config}, rope_parameters=rope_parameters(config))
