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


class NewConfig(PretrainedConfig):
    model_type = "new"

    def __init__(
        self,
        vocab_size: int = 30528,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.0,
        max_position_embeddings: int = 2048,
        type_vocab_size: int = 1,
        initializer_range: float = 0.02,
        layer_norm_type: str = "layer_norm",
        layer_norm_eps: float = 1e-12,
        position_embedding_type: str = "rope",
        rope_theta: float = 10000.0,
        rope_scaling: dict | None = None,
        classifier_dropout: float | None = None,
        pack_qkv: bool = True,
        unpad_inputs: bool = False,
        use_memory_efficient_attention: bool = False,
        logn_attention_scale: bool = False,
        logn_attention_clip1: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_type = layer_norm_type
        self.layer_norm_eps = layer_norm_eps
        self.position_embedding_type = position_embedding_type
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.classifier_dropout = classifier_dropout
        self.pack_qkv = pack_qkv
        self.unpad_inputs = unpad_inputs
        self.use_memory_efficient_attention = use_memory_efficient_attention
        self.logn_attention_scale = logn_attention_scale
        self.logn_attention_clip1 = logn_attention_clip1


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
